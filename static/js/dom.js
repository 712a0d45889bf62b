// The one way this app's scripts put server strings into a page: as text nodes and attribute values,
// never as markup. Class, dataset, label-set and file names come from uploaded datasets that the lab
// did not make; parsing any of them as HTML would run whatever they contain. tests/webapp/core/test_escaping.py
// refuses innerHTML and its relatives in every script, so build nodes with el() or set textContent.
//
// The page's Content-Security-Policy forbids inline style attributes too, so the few values the
// templates style per element travel in data attributes and are applied here through the CSSOM
// (site.js applies them to every page as it loads).

const SVG = "http://www.w3.org/2000/svg";

// el("a", { className: "muted", href: url, data: { id: 3 } }, "text", otherNode)
// Strings among the children become text nodes; attribute values are set with setAttribute, which
// never parses them. Event-handler attributes are refused: handlers belong in the scripts.
function build(namespace, tag, props, children) {
  const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (/^on/i.test(key)) throw new Error(`dom.el: refusing the event-handler attribute ${key}`);
    if (key === "className") node.setAttribute("class", value);
    else if (key === "text") node.textContent = value;
    else if (key === "data") Object.entries(value).forEach(([k, v]) => { node.dataset[k] = v; });
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  node.append(...children.filter((child) => child != null).map((child) =>
    (child instanceof Node ? child : document.createTextNode(String(child)))));
  return node;
}
export const el = (tag, props, ...children) => build(null, tag, props, children);
export const svgEl = (tag, props, ...children) => build(SVG, tag, props, children);

// Replace an element's content with text and nodes (the safe counterpart of assigning innerHTML).
export function replace(node, ...children) {
  node.replaceChildren(...children.filter((child) => child != null));
  return node;
}

// A CSS colour from the server, checked before it reaches a style: "#rgb" or "#rrggbb" only.
const COLOR = /^#(?:[0-9a-f]{3}|[0-9a-f]{6})$/i;
export const cssColor = (value, fallback = "#9e9e9e") => (COLOR.test(String(value || "").trim()) ? value.trim() : fallback);

// data-class-color="#rrggbb": the element's --class-color (swatches, class buttons, legends).
// data-percent="42.5": a progress bar's width.
export function applyDataStyles(root = document) {
  root.querySelectorAll("[data-class-color]").forEach((node) => {
    node.style.setProperty("--class-color", cssColor(node.dataset.classColor));
  });
  root.querySelectorAll("[data-percent]").forEach((node) => setPercent(node, node.dataset.percent));
}

// A progress bar's fill: its width, and the value assistive technology reads from its track (the element with
// role="progressbar" that templates/core/_progress_bar.html draws, named there by what it measures). ``text``:
// the value in words (aria-valuetext: "case.svs: 16.0 of 80.0 MB (20%)", "stage sparse · epoch 3/10 · 42%");
// without it a screen reader says the percentage.
export function setPercent(bar, value, text) {
  const percent = Math.min(Math.max(Number(value) || 0, 0), 100);
  bar.style.width = `${percent}%`;
  const track = bar.parentElement;
  if (track && track.getAttribute("role") === "progressbar") {
    track.setAttribute("aria-valuenow", String(Math.round(percent)));
    if (text) track.setAttribute("aria-valuetext", text);
    else track.removeAttribute("aria-valuetext");
  }
}
