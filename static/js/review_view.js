// The review page's drawing: the nucleus under review over its crop (close up or its neighbourhood),
// the model's prediction and the class buttons' bars, its labels in the other label sets, the
// reservation clock, the status line and the progress figures. It reads nothing from the server:
// review.js hands it the nucleus and the figures to show.
import { cssColor, el, replace, svgEl } from "./dom.js";
import { nucleusName, pct } from "./format.js";
import { UNLABELLED, polygon, viewBox } from "./overlay.js";

// Screen pixels per tissue pixel, at most: a small crop blown up to the whole stage only blurs.
const MAX_ZOOM = 4;
// Zoomed out, the neighbourhood is shown at 1 screen px per tissue px (smaller where it does not fit); a small
// tile's whole neighbourhood (256 px in a 680 px stage) up to twice that, so that zooming out does not shrink it.
const CONTEXT_ZOOM = 1;
const CONTEXT_MAX_ZOOM = 2;

const sourceText = (label) => `${label.source.replace("_", " ")}${label.author ? `, by ${label.author}` : ""}`;

export class ReviewView {
  constructor(root) {
    const role = (name) => root.querySelector(`[data-role="${name}"]`);
    this.root = root;
    this.stage = role("stage");
    this.crop = role("crop");
    this.svg = role("overlay");
    this.empty = role("empty");
    this.loading = role("loading");
    this.caption = role("caption");
    this.predictionBox = role("prediction");
    this.branches = role("branches");
    this.currentLine = role("current");
    this.statusLine = role("status");
    this.announcement = role("announce");
    this.zoomButton = role("zoom");
    this.othersCard = document.querySelector('[data-role="others-card"]');
    this.othersList = document.querySelector('[data-role="others"]');
    this.help = document.querySelector('[data-role="help"]');
    this.buttons = Array.from(root.querySelectorAll(".class-button"));
    this.classes = this.buttons.map((b) => ({ index: Number(b.dataset.classIndex), name: b.dataset.className,
                                              color: cssColor(b.dataset.classColor) }));
    this.leaseTimer = null;
    // The next nucleus's outlines are not drawn over the last one's tissue: until its crop has loaded, the
    // stage shows "Loading…" and the page takes no decision (review.js asks tissueLoading).
    this.tissueLoading = false;
    const loaded = () => {
      this.tissueLoading = false;
      this.stage.classList.remove("is-loading-tissue");
      this.loading.hidden = true;
    };
    this.crop.addEventListener("load", loaded);
    this.crop.addEventListener("error", loaded);
  }

  classOf(index) { return this.classes.find((c) => c.index === index); }
  colorOf(index) { return index == null ? UNLABELLED : (this.classOf(index) || {}).color || UNLABELLED; }

  setStatus(text, kind = "") {
    this.statusLine.textContent = text;
    this.statusLine.className = `review-status small ${kind}`;
  }

  // A failure is on the status line (not a conflict, which stays until the reviewer reads it).
  showsFailure() {
    return this.statusLine.classList.contains("error") && !this.statusLine.classList.contains("conflict");
  }

  setLoading(on) { this.loading.hidden = !on; }
  setReady() { this.root.dataset.ready = "true"; }

  showProgress(progress) {
    const set = (name, text) => { this.root.querySelector(`[data-role="${name}"]`).textContent = text; };
    set("today", progress.today == null ? "–" : progress.today);
    set("left", progress.left == null ? "–" : progress.left);
    set("agreement", progress.compared ? `${pct(progress.agreed / progress.compared)} of ${progress.compared}` : "–");
  }

  // What a class button shows by its frame (the predicted class, the current label), said in words to a
  // screen reader as part of the button's name.
  sayState(button) {
    const said = button.querySelector('[data-role="said"]');
    if (!said) return;
    const states = [];
    if (button.classList.contains("is-predicted")) states.push("predicted");
    if (button.classList.contains("is-current")) states.push("current label");
    said.textContent = states.length ? `, ${states.join(", ")}` : "";
  }

  toggleHelp() {
    if (this.help.open) this.help.close(); else this.help.showModal();
  }

  // ---------------------------------------------------------------- the nucleus
  // The close-up or the neighbourhood around it: the crop, its size on screen and the overlay's box.
  showView(item, zoomedOut) {
    if (!item) return;
    const view = zoomedOut && item.context ? item.context : item.region;
    if (this.crop.getAttribute("src") !== view.url) {
      this.crop.src = view.url;
      this.tissueLoading = !this.crop.complete;
      this.stage.classList.toggle("is-loading-tissue", this.tissueLoading);
      this.loading.hidden = !this.tissueLoading;
    }
    const [x0, y0, x1, y1] = view.bbox;
    const size = Math.max(x1 - x0, y1 - y0);
    const fill = Math.min(CONTEXT_MAX_ZOOM, (this.stage.clientWidth || 0) / size);
    const zoom = zoomedOut ? Math.max(CONTEXT_ZOOM, fill) : MAX_ZOOM;
    this.stage.style.setProperty("--crop-size", `${zoom * size}px`);
    this.root.dataset.zoom = zoomedOut ? "out" : "in";
    this.zoomButton.setAttribute("aria-pressed", String(zoomedOut));
    this.zoomButton.firstChild.textContent = zoomedOut ? "Close up " : "Zoom out ";
    this.draw(item, zoomedOut);
  }

  draw(item, zoomedOut) {
    const svg = this.svg;
    svg.replaceChildren();
    if (!item) return;
    const view = zoomedOut && item.context ? item.context : item.region;
    viewBox(svg, view.bbox);
    if (zoomedOut) {
      // Where the close-up was, so the eye finds the nucleus again.
      const [rx0, ry0, rx1, ry1] = item.region.bbox;
      svg.appendChild(svgEl("rect", { class: "closeup-frame", x: rx0 - 0.5, y: ry0 - 0.5,
                                      width: rx1 - rx0, height: ry1 - ry0 }));
    }
    for (const n of item.neighbours) {
      const known = n.class_index != null;
      polygon(svg, n.outline, {
        class: `neighbour${known ? "" : " predicted-only"}`,
        stroke: this.colorOf(known ? n.class_index : n.predicted_class),
        "data-nucleus-id": n.id,
      });
    }
    const target = item.current ? item.current.class_index
      : item.prediction ? item.prediction.class_index : null;
    polygon(svg, item.nucleus.outline, { class: "target-halo" });
    polygon(svg, item.nucleus.outline, { class: "target", stroke: this.colorOf(target), "data-nucleus-id": item.nucleus.id,
                                         "data-role": "target" });
  }

  renderCurrent(item) {
    const c = item && item.current;
    this.currentLine.textContent = "";
    if (!item) return;
    if (!c) { this.currentLine.textContent = "No label in this label set yet."; return; }
    this.currentLine.append("Current label: ", el("strong", {}, c.class_name), ` (${sourceText(c)})`);
    this.buttons.forEach((b) => {
      b.classList.toggle("is-current", Number(b.dataset.classIndex) === c.class_index);
      this.sayState(b);
    });
  }

  render(item, zoomedOut) {
    const { root, buttons } = this;
    this.loading.hidden = true;
    this.empty.hidden = !!item;
    this.stage.classList.toggle("is-empty", !item);
    // The buttons are disabled when the queue runs out: one of them had the focus, which would fall to the page.
    // Nothing to accept or skip once the queue is empty either (undo stays: the last decision can be taken back).
    const actions = Array.from(this.root.querySelectorAll('[data-action="accept"], [data-action="skip"], [data-action="zoom"]'));
    const focusWasOnAButton = [...buttons, ...actions].some((b) => b === document.activeElement);
    buttons.forEach((b) => { b.disabled = !item; b.classList.remove("is-predicted", "is-current"); this.sayState(b); });
    actions.forEach((b) => { b.disabled = !item; });
    if (!item && focusWasOnAButton) this.empty.querySelector('[data-role="empty-heading"]')?.focus();
    this.renderOthers(item);
    if (!item) {
      this.crop.removeAttribute("src");
      this.svg.replaceChildren();
      this.caption.textContent = "\u00a0";
      replace(this.predictionBox, el("span", { className: "muted" }, "Nothing to review."));
      this.branches.hidden = true;
      this.currentLine.textContent = "\u00a0";
      root.dataset.nucleusId = "";
      this.announcement.textContent = "";  // the empty queue's own notice is a status
      return;
    }
    root.dataset.nucleusId = item.nucleus.id;
    this.showView(item, zoomedOut);
    // Caption: where the nucleus comes from, with links to its history and the whole image.
    const lease = el("span", { className: "lease", data: { role: "lease" } });
    replace(this.caption, `${item.image.dataset.name} / ${item.image.name} · ${nucleusName(item.nucleus.instance_id)} · `,
            el("a", { href: item.nucleus.page_url }, "history"), " · ", el("a", { href: item.image.viewer_url }, "whole image"),
            " · ", lease);
    this.startLeaseClock(item, lease);
    // Prediction and probabilities, both branches.
    const p = item.prediction;
    if (p) {
      const swatch = el("span", { className: "swatch" });
      swatch.style.background = this.colorOf(p.class_index);
      replace(this.predictionBox, "Predicted ", swatch, el("strong", {}, p.class_name), ` ${pct(p.probability)}`,
              el("span", { className: "muted small" }, ` · model v${p.model_version ? p.model_version.number : "?"}`));
    } else {
      replace(this.predictionBox, el("span", { className: "muted" }, "No prediction for this nucleus."));
    }
    const current = item.current ? ` Current label ${item.current.class_name}.` : "";
    this.announcement.textContent = `Next: ${nucleusName(item.nucleus.instance_id, item.image.name)}, `
      + `${p ? `predicted ${p.class_name} ${pct(p.probability)}` : "no prediction"}.${current}`;
    const disagree = !!(p && p.mlp_probs && p.branches_disagree);
    buttons.forEach((b) => {
      const index = Number(b.dataset.classIndex);
      const value = p ? p.probs[index] || 0 : null;
      b.querySelector('[data-role="prob"]').style.width = p ? pct(value) : "0";
      b.querySelector('[data-role="base"]').style.width = p ? pct(p.base_probs[index] || 0) : "0";
      b.querySelector('[data-role="mlp"]').style.width = p && p.mlp_probs ? pct(p.mlp_probs[index] || 0) : "0";
      b.querySelector('[data-role="prob-value"]').textContent = p ? pct(value) : "";
      b.classList.toggle("is-predicted", !!p && p.class_index === index);
      this.sayState(b);
      const tags = [];
      if (disagree) {
        if (p.base_class === index) tags.push("base");
        if (p.mlp_class === index) tags.push("correlation");
      }
      b.querySelector('[data-role="tag"]').textContent = tags.join(" · ");
    });
    root.classList.toggle("show-branches", disagree);
    if (disagree) {
      this.branches.hidden = false;
      this.branches.textContent = `The branches disagree: base head says ${this.classOf(p.base_class).name} ` +
        `(${pct(p.base_probs[p.base_class])}), the label-correlation branch ${this.classOf(p.mlp_class).name} ` +
        `(${pct(p.mlp_probs[p.mlp_class])}).`;
    } else {
      this.branches.hidden = true;
    }
    this.renderCurrent(item);
  }

  // The nucleus in the project's other label sets: its current label there and the model's class.
  renderOthers(item) {
    const others = (item && item.other_label_sets) || [];
    this.othersCard.hidden = !others.length;
    const swatch = (color) => {
      const node = el("span", { className: "swatch" });
      node.style.background = cssColor(color, UNLABELLED);
      return node;
    };
    replace(this.othersList, ...others.map((other) => el("li", { data: { labelSet: other.name } },
      el("div", { className: "other-name" }, other.name),
      other.current
        ? el("div", { className: "other-line", data: { role: "other-current" } }, "Label ", swatch(other.current.color),
             el("strong", { className: "other-class" }, other.current.class_name),
             el("span", { className: "muted" }, `(${sourceText(other.current)})`))
        : el("div", { className: "other-line muted", data: { role: "other-current" } }, "No label"),
      other.prediction
        ? el("div", { className: "other-line", data: { role: "other-prediction" } }, "Predicted ",
             swatch(other.prediction.color), el("span", { className: "other-class" }, other.prediction.class_name),
             el("span", { className: "muted" }, pct(other.prediction.probability)))
        : el("div", { className: "other-line muted", data: { role: "other-prediction" } }, "No prediction"))));
  }

  // How long the nucleus stays reserved for this reviewer (the queue's lease), counted down each second.
  startLeaseClock(item, node) {
    clearInterval(this.leaseTimer);
    this.leaseNode = node;
    if (!item || !item.lease) return;
    const until = new Date(item.lease.expires_at).getTime();
    const tick = () => {
      const left = Math.round((until - Date.now()) / 1000);
      if (left <= 0) {
        node.textContent = "reservation expired: others may get this nucleus";
        node.classList.add("expired");
        clearInterval(this.leaseTimer);
        return;
      }
      node.textContent = `reserved for you ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    };
    tick();
    this.leaseTimer = setInterval(tick, 1000);
  }

  // The reviewer lost the project (removed, or their role lowered): the server freed the nucleus, so the
  // caption stops counting a reservation that no longer exists.
  endLease(text) {
    clearInterval(this.leaseTimer);
    if (!this.leaseNode) return;
    this.leaseNode.textContent = text;
    this.leaseNode.classList.add("expired");
  }
}
