// Slide viewer: a whole-slide image in OpenSeadragon (Deep Zoom tiles from the app), a density heatmap of
// the nuclei when zoomed out, and past a zoom threshold the outlines of the nuclei in view (SVG), coloured
// by class for a label set and source; hovering a nucleus shows its labels in every label set, and n / p
// step through the nuclei in view with the keyboard.
//
// Only the viewport's nuclei are ever loaded: each pan or zoom asks the API for the box in view (with a
// margin), debounced, aborting the previous request; a view inside the last box needs no request.
//
// OpenSeadragon is vendored as a classic script (static/vendor/openseadragon), loaded before this module:
// its global is window.OpenSeadragon.
import { api } from "./api.js";
import { applyDataStyles, cssColor, el, svgEl } from "./dom.js";
import { STEP_KEYS, describe, describeAt, indexLabelSets } from "./nucleus_labels.js";
import { points, readingOrder, stepIn } from "./overlay.js";

function slideViewerPage(root, OSD) {
  const W = Number(root.dataset.width), H = Number(root.dataset.height);
  const MPP = Number(root.dataset.mpp) || null;
  const OUTLINE_ZOOM = 0.5;  // screen pixels per slide pixel from which outlines are drawn (a 20x view)
  const MARGIN = 0.2;        // the box asked for reaches this fraction of the view beyond each side
  const DEBOUNCE_MS = 120;

  const container = root.querySelector(".slide-viewport");
  const tip = document.getElementById("nucleus-tip");
  const info = document.getElementById("nucleus-info");
  const legend = document.getElementById("legend");
  const status = root.querySelector('[data-role="status"]');
  const zoomLabel = root.querySelector('[data-role="zoom"]');
  const labelSetSelect = document.getElementById("label-set");
  const sourceSelect = document.getElementById("source");
  const showOutlines = document.getElementById("show-outlines");
  const showDensity = document.getElementById("show-density");
  const densityLegend = document.getElementById("density-legend");

  // OpenSeadragon injects one <style> element (a focus rule for touch screens) unless the selector
  // style[data-openseadragon-mobile-css] finds one. The page's CSP refuses inline styles (an empty HTML
  // <style> included), so an inert element named "style" in a namespace of its own, which the selector
  // matches but no browser treats as a style sheet, takes its place; the rule itself is in app.css.
  if (!document.querySelector("style[data-openseadragon-mobile-css]")) {
    const placeholder = document.createElementNS("urn:x-nucleus-merge:inert", "style");
    placeholder.setAttribute("data-openseadragon-mobile-css", "true");
    document.head.append(placeholder);
  }

  const viewer = OSD({
    element: document.getElementById("slide-osd"),
    prefixUrl: root.dataset.osdImages,
    tileSources: root.dataset.dziUrl,
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    // OpenSeadragon's own zoom buttons are images a keyboard cannot reach: the toolbar has real buttons.
    showNavigationControl: false,
    maxZoomPixelRatio: 4,
    visibilityRatio: 0.5,
    animationTime: 0.6,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true },
  });

  let labelSets = [];        // from the API: [{id, name, classes}]
  let sets = {};             // label set id -> {name, classes: {index: {name, color}}}
  let unlabelledColor = "#9e9e9e";
  let nuclei = [];           // the nuclei of the last answer
  let shapes = [];           // one polygon per nucleus, same order
  let loaded = null;         // {box: [x0, y0, x1, y1], source, truncated} of the last answer
  let pending = null;        // AbortController of the request in flight
  let timer = null;
  let density = null;
  let heatmap = null;        // the density canvas, an OpenSeadragon overlay

  // ------------------------------------------------------------------ the SVG overlay
  const group = svgEl("g");
  // Hidden from assistive technology, as the heatmap: the viewport's name and the keys (n / p) with the side
  // panel say what is there, nucleus by nucleus.
  const svg = svgEl("svg", { class: "slide-overlay", "aria-hidden": "true" }, group);
  viewer.canvas.append(svg);

  function imageZoom() {
    return viewer.viewport.viewportToImageZoom(viewer.viewport.getZoom(true));
  }
  // Slide pixel (x, y) -> screen: outlines are stored at pixel centres, hence the half-pixel shift.
  function place() {
    const origin = viewer.viewport.imageToViewerElementCoordinates(new OSD.Point(0, 0));
    const far = viewer.viewport.imageToViewerElementCoordinates(new OSD.Point(W, 0));
    const scale = (far.x - origin.x) / W;
    group.setAttribute("transform", `translate(${origin.x} ${origin.y}) scale(${scale}) translate(0.5 0.5)`);
    const zoom = imageZoom();
    zoomLabel.textContent = `${zoom >= 0.1 ? Math.round(zoom * 100) : (zoom * 100).toFixed(1)}%`;
    const outlines = zoom >= OUTLINE_ZOOM;
    svg.classList.toggle("hidden", !outlines || !showOutlines.checked);
    if (heatmap) heatmap.classList.toggle("hidden", outlines || !showDensity.checked);
    if (!outlines) hideTip();
  }

  // ------------------------------------------------------------------ colours and legend
  function classIndex(nucleus, setId) {
    const entry = nucleus.classes[setId];
    return entry ? entry.index : null;
  }
  function colour(setId, index) {
    const cls = index == null || !sets[setId] ? null : sets[setId].classes[index];
    return cls ? cls.color : unlabelledColor;
  }
  function recolour() {
    const setId = labelSetSelect.value;
    const counts = {};
    let unlabelled = 0;
    nuclei.forEach((n, i) => {
      const entry = n.classes[setId];
      const c = cssColor(entry ? entry.color : unlabelledColor);
      shapes[i].setAttribute("stroke", c);
      shapes[i].setAttribute("fill", c);
      shapes[i].classList.toggle("unlabelled", !entry);
      if (entry) counts[entry.index] = (counts[entry.index] || 0) + 1; else unlabelled += 1;
    });
    drawLegend(setId, counts, unlabelled);
    const params = new URLSearchParams(location.search);
    params.set("label_set", setId);
    params.set("source", sourceSelect.value);
    history.replaceState(null, "", `?${params}`);
  }
  function drawLegend(setId, counts, unlabelled) {
    const item = (color, name, count, grey) => el("li", { className: grey ? "unlabelled" : null },
      el("span", { className: "swatch", "data-class-color": cssColor(color) }),
      el("span", {}, name), el("span", { className: "count" }, count));
    const items = [];
    const set = sets[setId];
    if (set) Object.values(set.classes).forEach((c) => items.push(item(c.color, c.name, counts[c.index] || 0, false)));
    items.push(item(unlabelledColor, "unlabelled", unlabelled, true));
    legend.replaceChildren(...items);
    applyDataStyles(legend);
  }

  // ------------------------------------------------------------------ nuclei of the view
  function viewBox() {
    const r = viewer.viewport.viewportToImageRectangle(viewer.viewport.getBounds(true));
    return [r.x, r.y, r.x + r.width, r.y + r.height];
  }
  function inside(inner, outer) {
    return inner[0] >= outer[0] && inner[1] >= outer[1] && inner[2] <= outer[2] && inner[3] <= outer[3];
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, DEBOUNCE_MS);
  }
  function refresh(force) {
    const zoom = imageZoom();
    if (zoom < OUTLINE_ZOOM) {
      status.textContent = density ? `${density.total} nuclei · zoom in for outlines` : "Zoom in for outlines";
      return;
    }
    const view = viewBox();
    const clipped = [Math.max(0, view[0]), Math.max(0, view[1]), Math.min(W, view[2]), Math.min(H, view[3])];
    if (clipped[2] <= clipped[0] || clipped[3] <= clipped[1]) return;
    if (force !== true && loaded && !loaded.truncated && loaded.source === sourceSelect.value
        && inside(clipped, loaded.box)) {
      showCount();
      return;
    }
    const w = view[2] - view[0], h = view[3] - view[1];
    const box = [Math.max(0, Math.floor(view[0] - w * MARGIN)), Math.max(0, Math.floor(view[1] - h * MARGIN)),
                 Math.min(W, Math.ceil(view[2] + w * MARGIN)), Math.min(H, Math.ceil(view[3] + h * MARGIN))];
    load(box);
  }
  async function load(box) {
    if (pending) pending.abort();
    const controller = pending = new AbortController();
    const source = sourceSelect.value;
    const params = new URLSearchParams({ x0: box[0], y0: box[1], x1: box[2], y1: box[3], source });
    status.textContent = "Loading nuclei…";
    let data;
    try {
      data = await api(`${root.dataset.nucleiUrl}?${params}`, { signal: controller.signal });
    } catch (err) {
      if (err.name === "AbortError") return;
      if (controller !== pending) return;
      pending = null;
      fail(err.status ? err.detail || `Could not load the nuclei (HTTP ${err.status}).`
                      : `Could not load the nuclei (${err.message}).`);
      return;
    }
    if (controller !== pending) return;
    pending = null;
    status.classList.remove("error");
    labelSets = data.label_sets;
    sets = indexLabelSets(labelSets);
    unlabelledColor = data.unlabelled_color;
    nuclei = data.nuclei;
    loaded = { box: data.box, source: data.source, truncated: data.truncated };
    draw();
    recolour();
    showCount();
    root.dataset.outlines = String(nuclei.length);
  }
  function showCount() {
    if (!loaded) return;
    status.textContent = loaded.truncated
      ? `The first ${nuclei.length} nuclei of this area · zoom in for all`
      : `${nuclei.length} nuclei around the view`;
  }
  function fail(message) {
    status.textContent = message;
    status.classList.add("error");
  }
  function draw() {
    hideTip();
    const fragment = document.createDocumentFragment();
    shapes = nuclei.map((n, i) => {
      const shape = svgEl("polygon", { points: points(n.outline), data: { index: i, nucleusId: n.id } });
      fragment.append(shape);
      return shape;
    });
    group.replaceChildren(fragment);
    const again = nuclei.findIndex((n) => n.id === selectedId);  // a chosen nucleus stays chosen across loads
    if (again >= 0) shapes[again].classList.add("selected");
  }

  // ------------------------------------------------------------------ hover (found by position: the
  // overlay lets every pointer event through to OpenSeadragon, which pans and zooms)
  function containsPoint(outline, x, y) {
    let hit = false;
    for (let i = 0, j = outline.length - 1; i < outline.length; j = i++) {
      const [xi, yi] = outline[i], [xj, yj] = outline[j];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
    }
    return hit;
  }
  function nucleusAt(x, y) {  // x, y: slide pixels; outlines are at pixel centres
    const px = x - 0.5, py = y - 0.5;
    for (let i = 0; i < nuclei.length; i += 1) {
      const b = nuclei[i].bbox;
      if (x < b[0] || x > b[2] || y < b[1] || y > b[3]) continue;
      if (containsPoint(nuclei[i].outline, px, py)) return i;
    }
    return -1;
  }
  let hovered = -1;
  function hover(position) {
    if (imageZoom() < OUTLINE_ZOOM || !showOutlines.checked) { hideTip(); return; }
    const point = viewer.viewport.viewerElementToImageCoordinates(position);
    const index = nucleusAt(point.x, point.y);
    if (index < 0) { hideTip(); return; }
    if (index !== hovered) {
      if (hovered >= 0 && shapes[hovered]) shapes[hovered].classList.remove("hover");
      hovered = index;
      shapes[index].classList.add("hover");
      const card = () => describe(nuclei[index], labelSets, sets, colour);
      tip.replaceChildren(card());
      // The side panel follows the pointer until a nucleus is chosen with n / p; then it keeps that one.
      if (selectedId == null) info.replaceChildren(card());
      tip.hidden = false;
    }
    moveTip(position);
  }
  function moveTip(position) {
    const r = container.getBoundingClientRect();
    let x = position.x + 16, y = position.y + 16;
    if (x + tip.offsetWidth > r.width) x = position.x - tip.offsetWidth - 12;
    if (y + tip.offsetHeight > r.height) y = position.y - tip.offsetHeight - 12;
    tip.style.transform = `translate(${Math.max(0, x)}px, ${Math.max(0, y)}px)`;
  }
  function hideTip() {
    if (hovered >= 0 && shapes[hovered]) shapes[hovered].classList.remove("hover");
    hovered = -1;
    tip.hidden = true;
  }
  let frame = 0;
  new OSD.MouseTracker({
    element: viewer.canvas,
    moveHandler: (event) => {
      const position = event.position;
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => hover(position));
    },
    leaveHandler: () => { cancelAnimationFrame(frame); hideTip(); },
  });

  // ------------------------------------------------------------------ keyboard: n / p through the nuclei in view
  let selectedId = null;     // the chosen nucleus's id (kept across loads), or null
  function nucleiInView() {
    const [x0, y0, x1, y1] = viewBox();
    const visible = [];
    nuclei.forEach((n, i) => {
      const cx = (n.bbox[0] + n.bbox[2]) / 2, cy = (n.bbox[1] + n.bbox[3]) / 2;
      if (cx >= x0 && cx <= x1 && cy >= y0 && cy <= y1) visible.push(i);
    });
    const order = readingOrder(visible.map((i) => nuclei[i].outline));
    return order.map((k) => visible[k]);
  }
  function select(index, place, count) {
    group.querySelectorAll("polygon.selected").forEach((shape) => shape.classList.remove("selected"));
    if (index == null) {
      selectedId = null;
      info.replaceChildren(el("p", { className: "muted small" }, "Hover a nucleus, or press n."));
      return;
    }
    selectedId = nuclei[index].id;
    shapes[index].classList.add("selected");
    info.replaceChildren(describeAt(`${place + 1} of ${count} in view`, nuclei[index], labelSets, sets, colour));
  }
  container.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const step = STEP_KEYS[e.key];
    if (step) {
      e.preventDefault();
      if (imageZoom() < OUTLINE_ZOOM || !showOutlines.checked) {
        info.replaceChildren(el("p", { className: "muted small" }, "Zoom in (+) until the outlines show, then press n."));
        return;
      }
      const order = nucleiInView();
      const current = nuclei.findIndex((n) => n.id === selectedId);
      const index = stepIn(order, current, step);
      if (index == null) info.replaceChildren(el("p", { className: "muted small" }, "No nucleus in view."));
      else select(index, order.indexOf(index), order.length);
    } else if (e.key === "Escape" && selectedId != null) {
      e.preventDefault();
      select(null);
    }
  });

  // ------------------------------------------------------------------ density heatmap (zoomed out)
  function heat(t) {  // 0..1 -> [r, g, b, a]: transparent blue through yellow to red
    const stops = [[49, 54, 149], [69, 117, 180], [254, 224, 144], [244, 109, 67], [165, 0, 38]];
    const p = Math.min(0.999, Math.max(0, t)) * (stops.length - 1);
    const i = Math.floor(p), f = p - i;
    const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
    return [...c, Math.round(40 + 140 * Math.sqrt(t))];
  }
  async function loadDensity() {
    let data;
    try {
      data = await api(root.dataset.densityUrl);
    } catch (err) {
      return;  // the heatmap is a help, not a necessity
    }
    density = data;
    const canvas = document.createElement("canvas");
    canvas.width = data.cols;
    canvas.height = data.rows;
    canvas.className = "slide-heatmap";
    canvas.setAttribute("aria-hidden", "true");   // the density legend says it in words
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(data.cols, data.rows);
    data.counts.forEach((n, i) => { if (n > 0) pixels.data.set(heat(n / (data.max || 1)), i * 4); });
    context.putImageData(pixels, 0, 0);
    heatmap = canvas;
    viewer.addOverlay({ element: canvas, location: viewer.viewport.imageToViewportRectangle(
      data.origin[0] * data.cell, data.origin[1] * data.cell, data.cols * data.cell, data.rows * data.cell) });
    const side = MPP ? `${data.cell} px (${Math.round(data.cell * MPP)} µm)` : `${data.cell} px`;
    densityLegend.querySelector('[data-role="density-note"]').textContent =
      `Nuclei per ${side} square: 0 to ${data.max}; ${data.total} in all.`;
    densityLegend.hidden = false;
    place();
    refresh();
  }

  // ------------------------------------------------------------------ wiring
  function restoreChoice() {
    const params = new URLSearchParams(location.search);
    const setId = params.get("label_set"), source = params.get("source");
    if (setId && Array.from(labelSetSelect.options).some((o) => o.value === setId)) labelSetSelect.value = setId;
    if (source && Array.from(sourceSelect.options).some((o) => o.value === source)) sourceSelect.value = source;
  }
  restoreChoice();
  // ?x=&y= (level-0 pixels; the review page's link to a nucleus): open at one slide pixel per screen pixel
  // around that point, so its outline and its neighbours' show at once.
  function focusFromQuery() {
    const params = new URLSearchParams(location.search);
    const x = Number(params.get("x")), y = Number(params.get("y"));
    if (!params.has("x") || !params.has("y") || !Number.isFinite(x) || !Number.isFinite(y)) return;
    const v = viewer.viewport;
    v.zoomTo(v.imageToViewportZoom(1.0), v.imageToViewportCoordinates(x, y), true);
    v.panTo(v.imageToViewportCoordinates(x, y), true);
  }
  viewer.addHandler("open", () => {
    focusFromQuery();
    place();
    root.dataset.ready = "true";
    status.textContent = "Zoom in for outlines";
    loadDensity();
  });
  // OpenSeadragon's own message names an object, not the reason: the server's answer says it (a missing
  // slide file, a slide that cannot be read).
  viewer.addHandler("open-failed", async () => {
    try {
      await api(root.dataset.dziUrl);
      fail("Could not open the slide.");
    } catch (err) {
      fail(err.detail ? `Could not open the slide: ${err.detail}` : `Could not open the slide (${err.message}).`);
    }
  });
  const zoomActions = { in: () => viewer.viewport.zoomBy(1.5), out: () => viewer.viewport.zoomBy(1 / 1.5),
                        home: () => viewer.viewport.goHome() };
  root.querySelectorAll("[data-zoom]").forEach((b) => b.addEventListener("click", () => {
    zoomActions[b.dataset.zoom]();
    viewer.viewport.applyConstraints();
  }));
  viewer.addHandler("update-viewport", place);
  viewer.addHandler("viewport-change", schedule);
  labelSetSelect.addEventListener("change", () => { recolour(); hideTip(); });
  sourceSelect.addEventListener("change", () => { loaded = null; refresh(true); });
  showOutlines.addEventListener("change", place);
  showDensity.addEventListener("change", place);
  window.slideViewer = { viewer, imageZoom, OUTLINE_ZOOM, nuclei: () => nuclei };  // for the browser tests
}

const slideViewer = document.getElementById("slide-viewer");
if (slideViewer && window.OpenSeadragon) slideViewerPage(slideViewer, window.OpenSeadragon);
