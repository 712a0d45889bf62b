// One card of the gallery's strip: the nucleus's crop with its outline, the predicted class and
// scores, who decided it (reviewed views), and the Agree button and Disagree menu. The card keeps its
// nucleus in tile._item; what the buttons do is gallery.js's (the `on` callbacks).
import { onChosen } from "./choice.js";
import { el, svgEl } from "./dom.js";
import { pct } from "./format.js";
import { UNLABELLED, polygon, viewBox } from "./overlay.js";

// classes: [{index, name, color}] of the label set; on: {user, save(choices), choose(tile), selectionChanged()}.
export function galleryCard(item, classes, on) {
  const colorOf = (index) => (classes.find((c) => c.index === index) || {}).color || UNLABELLED;
  const tile = el("div", { className: "tile", data: { nucleusId: item.nucleus, predicted: item.class_name } });
  // Another reviewer's decision (the reviewed strip) is theirs to change: the server would refuse this
  // reviewer's Agree or Disagree, so the card offers none (a second opinion goes through the review page).
  const theirs = Boolean(item.current && item.current.source === "review" && item.current.author &&
                         item.current.author !== on.user);
  tile._decidable = !theirs;
  const box = el("input", { type: "checkbox", disabled: theirs,
                            "aria-label": `select nucleus ${item.instance_id} in ${item.image_name}` });
  box.addEventListener("change", () => { tile.classList.toggle("selected", box.checked); on.selectionChanged(); });
  const img = el("img", { src: item.crop_url, alt: `nucleus ${item.instance_id} in ${item.image_name}`, loading: "lazy" });
  const overlay = svgEl("svg", { "aria-hidden": "true" });   // the crop's alt names the nucleus
  viewBox(overlay, item.region);
  polygon(overlay, item.outline, { class: "target", stroke: colorOf(item.class_index) });
  const picture = el("span", { className: "tile-img" }, img, overlay);
  const predicted = el("div", { className: "tile-class" },
                       el("a", { href: item.page_url, "aria-label": `${item.class_name}: nucleus ${item.instance_id} and its history` },
                          item.class_name),
                       ` ${pct(item.probability)}`);
  const scores = el("div", { className: "tile-scores muted" },
                    `margin ${pct(item.margin)} · disagreement ${item.disagreement.toFixed(2)}`);
  const decided = item.current && item.current.source === "review"
    ? el("div", { className: "tile-decided", data: { role: "decided" } },
         `decided: ${item.current.class_name}${item.current.author ? ` by ${item.current.author}` : ""}`)
    : null;
  const agree = el("button", { type: "button", className: "agree small-button",
                               "aria-label": `Agree: nucleus ${item.instance_id} in ${item.image_name} is ${item.class_name}` },
                  "Agree");
  agree.addEventListener("click", () => on.save([{ item, tile, class_name: item.class_name }]));
  const move = el("select", { className: "move",
                              "aria-label": `disagree: another class for nucleus ${item.instance_id} in ${item.image_name}` },
                  el("option", { value: "" }, "Disagree…"),
                  ...classes.filter((c) => c.index !== item.class_index)
                    .map((c) => el("option", { value: c.name }, c.name)));
  // Saved once chosen: with the mouse, or Enter after the arrow keys (never on each arrow key: choice.js).
  onChosen(move, () => { if (move.value) on.save([{ item, tile, class_name: move.value }]); });
  const actions = theirs
    ? el("div", { className: "tile-meta muted" }, "another reviewer's decision")
    : el("div", { className: "tile-meta" }, agree, move);
  tile.append(...[el("label", { className: "tile-pick" }, box, picture), predicted, scores, decided, actions]
    .filter((node) => node != null));
  tile.addEventListener("click", (event) => {
    if (!event.target.closest("select, button, a, input")) on.choose(tile);
  });
  tile._item = item;
  return tile;
}
