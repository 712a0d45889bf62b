// Image viewer: nucleus outlines (SVG) over the image, coloured by class for a label set and source;
// zoom (wheel, buttons, keys), pan (drag, arrow keys), and a nucleus's labels in every label set on hover,
// on a click, or stepping through the nuclei with the keyboard (n / p), so that no labels need a mouse.
import { api } from "./api.js";
import { cssColor, el, svgEl } from "./dom.js";
import { STEP_KEYS, describe, describeAt, indexLabelSets } from "./nucleus_labels.js";
import { points, readingOrder, stepIn } from "./overlay.js";

function viewerPage(root) {
  const W = Number(root.dataset.width), H = Number(root.dataset.height);
  const viewport = root.querySelector(".viewport");
  const stage = root.querySelector(".stage");
  const svg = stage.querySelector("svg");
  const tip = document.getElementById("nucleus-tip");
  const info = document.getElementById("nucleus-info");
  const legend = document.getElementById("legend");
  const status = root.querySelector('[data-role="status"]');
  const zoomLabel = root.querySelector('[data-role="zoom"]');
  const labelSetSelect = document.getElementById("label-set");
  const sourceSelect = document.getElementById("source");

  let data = null;        // the API answer
  let shapes = [];        // one SVG polygon per nucleus, same order as data.nuclei
  let sets = {};          // label set id -> {name, classes: {index: {name, color}}}
  const view = { scale: 1, x: 0, y: 0 };
  stage.style.width = `${W}px`;
  stage.style.height = `${H}px`;

  // ------------------------------------------------------------------ zoom and pan
  function apply() {
    stage.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
    stage.classList.toggle("pixelated", view.scale >= 3);
    svg.style.setProperty("--px", `${1 / view.scale}px`);
    zoomLabel.textContent = `${Math.round(view.scale * 100)}%`;
  }
  function fitScale() {
    return Math.min(viewport.clientWidth / W, viewport.clientHeight / H);
  }
  let fittedScale = null;   // the scale of the last fit, while the user has not zoomed since
  function fit() {
    view.scale = fittedScale = fitScale();
    view.x = (viewport.clientWidth - W * view.scale) / 2;
    view.y = (viewport.clientHeight - H * view.scale) / 2;
    apply();
  }
  function zoomAt(factor, cx, cy) {
    const scale = Math.min(Math.max(view.scale * factor, fitScale() / 4), 64);
    const k = scale / view.scale;
    view.x = cx - (cx - view.x) * k;
    view.y = cy - (cy - view.y) * k;
    view.scale = scale;
    apply();
  }
  const centre = () => [viewport.clientWidth / 2, viewport.clientHeight / 2];
  const zoomActions = {
    in: () => zoomAt(1.5, ...centre()),
    out: () => zoomAt(1 / 1.5, ...centre()),
    fit,
    actual: () => zoomAt(1 / view.scale, ...centre()),
  };
  root.querySelectorAll("[data-zoom]").forEach((b) => b.addEventListener("click", () => zoomActions[b.dataset.zoom]()));
  viewport.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = viewport.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * (e.deltaMode ? 0.05 : 0.0015)), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  const PAN_STEP = 0.2;  // of the viewport, per arrow key
  viewport.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const key = { "+": "in", "=": "in", "-": "out", "0": "fit", "1": "actual" }[e.key];
    const pan = { ArrowLeft: [1, 0], ArrowRight: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] }[e.key];
    const step = STEP_KEYS[e.key];
    if (key) {
      zoomActions[key]();
    } else if (pan) {
      view.x += pan[0] * PAN_STEP * viewport.clientWidth;
      view.y += pan[1] * PAN_STEP * viewport.clientHeight;
      apply();
    } else if (step && data) {
      select(stepIn(order, selected, step));
    } else if (e.key === "Escape" && selected != null) {
      select(null);
    } else {
      return;
    }
    e.preventDefault();
  });
  let drag = null;
  viewport.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false };
  });
  window.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 3) return;
    if (!drag.moved) { drag.moved = true; viewport.classList.add("dragging"); hideTip(); }
    view.x = drag.vx + dx;
    view.y = drag.vy + dy;
    apply();
  });
  window.addEventListener("pointerup", (e) => {
    // A click (no drag) on a nucleus keeps its labels in the side panel and makes it the keyboard's place.
    if (drag && !drag.moved && e.target.dataset && e.target.dataset.index !== undefined) select(Number(e.target.dataset.index), false);
    drag = null;
    viewport.classList.remove("dragging");
  });
  // The image fitted to the window (as shown at first, or as the user left it) follows the window, narrowing
  // too; a view the user zoomed into stays where it is.
  window.addEventListener("resize", () => {
    if (view.scale === fittedScale || view.scale <= fitScale()) fit();
  });

  // ------------------------------------------------------------------ colours
  function classOf(nucleus, setId, source) {
    const entry = nucleus.labels[setId];
    if (!entry) return null;
    if (source === "current") return entry.class;
    if (source === "prediction") return entry.prediction ? entry.prediction.class : null;
    return entry[source];
  }
  function colour(setId, index) {
    const cls = index == null || !sets[setId] ? null : sets[setId].classes[index];
    return cls ? cls.color : data.unlabelled_color;
  }
  function recolour() {
    const setId = labelSetSelect.value, source = sourceSelect.value;
    const counts = {};
    let unlabelled = 0;
    data.nuclei.forEach((n, i) => {
      const index = classOf(n, setId, source);
      const c = colour(setId, index);
      shapes[i].setAttribute("stroke", c);
      shapes[i].setAttribute("fill", c);
      shapes[i].classList.toggle("unlabelled", index == null);
      if (index == null) unlabelled += 1; else counts[index] = (counts[index] || 0) + 1;
    });
    drawLegend(setId, counts, unlabelled);
    sourceCounts(setId);
    const params = new URLSearchParams(location.search);
    params.set("label_set", setId);
    params.set("source", source);
    history.replaceState(null, "", `?${params}`);
    root.querySelectorAll("[data-nav]").forEach((a) => { a.search = `?${params}`; });
    if (selected != null) select(selected, false);  // its card's colours follow the label set
  }
  function drawLegend(setId, counts, unlabelled) {
    legend.replaceChildren();
    const item = (color, name, count, grey) => {
      const li = document.createElement("li");
      if (grey) li.className = "unlabelled";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = cssColor(color);
      const label = document.createElement("span");
      label.textContent = name;
      const number = document.createElement("span");
      number.className = "count";
      number.textContent = count;
      li.append(swatch, label, number);
      legend.append(li);
    };
    const set = sets[setId];
    if (set) Object.entries(set.classes).forEach(([index, c]) => item(c.color, c.name, counts[index] || 0, false));
    item(data.unlabelled_color, "unlabelled", unlabelled, true);
  }
  function sourceCounts(setId) {
    // Show how many nuclei of this image each source labels in the chosen label set.
    Array.from(sourceSelect.options).forEach((option) => {
      const n = data.nuclei.reduce((sum, nucleus) => sum + (classOf(nucleus, setId, option.value) != null), 0);
      option.textContent = `${option.dataset.name || (option.dataset.name = option.textContent)} (${n})`;
    });
  }

  // ------------------------------------------------------------------ hover
  function showTip(index, e) {
    const nucleus = data.nuclei[index];
    // The same card as the slide viewer's (nucleus_labels.js), once in the tip and once beside the image.
    tip.replaceChildren(describe(nucleus, data.label_sets, sets, colour));
    // The side panel follows the pointer until a nucleus is chosen (a click or n / p); then it keeps that one.
    if (selected == null) info.replaceChildren(describe(nucleus, data.label_sets, sets, colour));
    tip.hidden = false;
    moveTip(e);
  }
  function moveTip(e) {
    const r = viewport.getBoundingClientRect();
    let x = e.clientX - r.left + 16, y = e.clientY - r.top + 16;
    if (x + tip.offsetWidth > r.width) x = e.clientX - r.left - tip.offsetWidth - 12;
    if (y + tip.offsetHeight > r.height) y = e.clientY - r.top - tip.offsetHeight - 12;
    tip.style.transform = `translate(${Math.max(0, x)}px, ${Math.max(0, y)}px)`;
  }
  function hideTip() { tip.hidden = true; }

  // ------------------------------------------------------------------ keyboard: one nucleus after another
  let order = [];         // indices into data.nuclei in reading order
  let selected = null;    // index into data.nuclei, or null
  function select(index, reveal = true) {
    if (selected != null) shapes[selected].classList.remove("selected");
    selected = index;
    if (index == null) {
      info.replaceChildren(el("p", { className: "muted small" }, "Hover a nucleus, click one, or press n."));
      return;
    }
    shapes[index].classList.add("selected");
    info.replaceChildren(describeAt(`${order.indexOf(index) + 1} of ${order.length}`, data.nuclei[index],
                                    data.label_sets, sets, colour));
    if (reveal) centreOn(data.nuclei[index]);
  }
  // Pan (never zoom) so that a nucleus outside the visible part comes to the middle of the view.
  function centreOn(nucleus) {
    const xs = nucleus.outline.map(([x]) => x), ys = nucleus.outline.map(([, y]) => y);
    const cx = (Math.min(...xs) + Math.max(...xs)) / 2, cy = (Math.min(...ys) + Math.max(...ys)) / 2;
    const sx = view.x + cx * view.scale, sy = view.y + cy * view.scale;
    const margin = 24;
    if (sx >= margin && sx <= viewport.clientWidth - margin && sy >= margin && sy <= viewport.clientHeight - margin) return;
    view.x = viewport.clientWidth / 2 - cx * view.scale;
    view.y = viewport.clientHeight / 2 - cy * view.scale;
    apply();
  }
  let hovered = null;
  svg.addEventListener("pointerover", (e) => {
    if (drag && drag.moved) return;
    const index = e.target.dataset ? e.target.dataset.index : undefined;
    if (index === undefined) return;
    if (hovered) hovered.classList.remove("hover");
    hovered = e.target;
    hovered.classList.add("hover");
    showTip(Number(index), e);
  });
  svg.addEventListener("pointermove", (e) => { if (!tip.hidden) moveTip(e); });
  svg.addEventListener("pointerout", (e) => {
    const next = e.relatedTarget;
    if (next && next.dataset && next.dataset.index !== undefined) return;  // onto another nucleus
    if (hovered) hovered.classList.remove("hover");
    hovered = null;
    hideTip();
  });

  // ------------------------------------------------------------------ load
  function draw() {
    const fragment = document.createDocumentFragment();
    shapes = data.nuclei.map((n, i) => {
      const shape = svgEl("polygon", { points: points(n.outline), data: { index: i, nucleusId: n.id } });
      fragment.append(shape);
      return shape;
    });
    svg.replaceChildren(fragment);
  }
  function restoreChoice() {
    const params = new URLSearchParams(location.search);
    const setId = params.get("label_set"), source = params.get("source");
    if (setId && sets[setId]) labelSetSelect.value = setId;
    if (source === "prediction" && !sourceSelect.querySelector('option[value="prediction"]')) return;
    if (source && Array.from(sourceSelect.options).some((o) => o.value === source)) sourceSelect.value = source;
  }
  async function load() {
    fit();
    try {
      data = await api(root.dataset.nucleiUrl);
    } catch (err) {
      status.textContent = err.status ? err.detail || `Could not load the nuclei (HTTP ${err.status}).`
                                      : `Could not load the nuclei (${err.message}).`;
      status.classList.add("error");
      return;
    }
    sets = indexLabelSets(data.label_sets);
    order = readingOrder(data.nuclei.map((n) => n.outline));
    data.sources.forEach((s) => {  // a source the page did not know (predictions arrived meanwhile)
      if (!sourceSelect.querySelector(`option[value="${s.key}"]`)) sourceSelect.add(new Option(s.name, s.key));
    });
    restoreChoice();
    draw();
    recolour();
    status.textContent = `${data.nuclei.length} nuclei`;
    root.dataset.ready = "true";
  }
  labelSetSelect.addEventListener("change", recolour);
  sourceSelect.addEventListener("change", recolour);
  document.getElementById("show-outlines").addEventListener("change", (e) => { svg.style.display = e.target.checked ? "" : "none"; });
  document.getElementById("show-fill").addEventListener("change", (e) => svg.classList.toggle("no-fill", !e.target.checked));
  load();
}

const viewer = document.getElementById("viewer");
if (viewer) viewerPage(viewer);
