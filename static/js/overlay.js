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
