// Nucleus outlines as SVG over a crop of the tissue (the review page and the gallery). Outlines are
// stored at pixel centres, hence the half-pixel shift of the view box.
import { svgEl } from "./dom.js";

// The outline colour of a nucleus without a class.
export const UNLABELLED = "#9e9e9e";

// [[x, y], ...] -> "x,y x,y ..." (an SVG points attribute)
export const points = (outline) => outline.map(([x, y]) => `${x},${y}`).join(" ");

export function polygon(svg, outline, attrs) {
  const shape = svgEl("polygon", { points: points(outline), ...attrs });
  svg.appendChild(shape);
  return shape;
}

// Show the box [x0, y0, x1, y1] of the crop's pixels, scaled to fit.
export function viewBox(svg, [x0, y0, x1, y1]) {
  svg.setAttribute("viewBox", `${x0 - 0.5} ${y0 - 0.5} ${x1 - x0} ${y1 - y0}`);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
}

// The order in which n / p step through nuclei: bands of `band` pixels from the top, left to right within a
// band, so that stepping walks an image as a person scans it rather than in the order nuclei were stored.
// outlines: [[[x, y], ...], ...] -> their indices in that order.
export function readingOrder(outlines, band = 32) {
  const key = outlines.map((outline) => {
    let top = Infinity, left = Infinity;
    outline.forEach(([x, y]) => { top = Math.min(top, y); left = Math.min(left, x); });
    return [Math.floor(top / band), left];
  });
  return outlines.map((_, i) => i).sort((a, b) => key[a][0] - key[b][0] || key[a][1] - key[b][1]);
}

// The index `step` places after `current` in `order` (round at the ends); from no place (current not in
// order), the first for a step forward and the last for a step back.
export function stepIn(order, current, step) {
  if (!order.length) return null;
  const place = order.indexOf(current);
  if (place < 0) return order[step > 0 ? 0 : order.length - 1];
  return order[(place + step + order.length) % order.length];
}
