// A nucleus's labels in every label set, as the hover card of the image viewer and the slide viewer show
// them: per label set the current class and its source, the ground truth where it differs, and the
// active model's prediction with its probability. Built from nodes and text only (class and label-set
// names come from uploaded datasets).
import { cssColor, el } from "./dom.js";

export const SOURCE_NAMES = { current: "current", ground_truth: "ground truth", review: "review",
                              pseudo: "pseudo label", prediction: "prediction" };

// nucleus: {instance_id, area, labels: {label_set_id: {class, source, ground_truth, review, prediction}}}
// labelSets: [{id, name}] in display order; sets: {label_set_id: {classes: {index: {name, color}}}};
// colour(setId, index): the swatch colour (the unlabelled grey for a null index).
export function describe(nucleus, labelSets, sets, colour) {
  const table = document.createElement("table");
  labelSets.forEach((ls) => {
    const entry = nucleus.labels[ls.id];
    const row = table.insertRow();
    row.dataset.labelSet = ls.name;
    row.insertCell().textContent = ls.name;
    const cell = row.insertCell();
    const add = (index, note) => {
      const swatch = el("span", { className: "swatch" });
      swatch.style.background = cssColor(colour(ls.id, index));
      const cls = index == null || !sets[ls.id] ? null : sets[ls.id].classes[index];
      const line = el("div", {}, swatch, cls ? cls.name : (index == null ? "unlabelled" : `class ${index}`));
      if (note) line.append(" ", el("span", { className: "source" }, note));
      cell.append(line);
    };
    if (!entry || entry.class == null) {
      add(null, "");
    } else {
      add(entry.class, SOURCE_NAMES[entry.source] || entry.source);
    }
    if (entry && entry.ground_truth != null && entry.ground_truth !== entry.class) add(entry.ground_truth, "ground truth");
    if (entry && entry.prediction) {
      const p = entry.prediction.probability;
      add(entry.prediction.class, `prediction${p != null ? " " + Math.round(p * 100) + "%" : ""}`);
    }
  });
  return el("div", {}, el("p", { className: "tip-head" }, `Nucleus ${nucleus.instance_id} · ${nucleus.area} px²`), table);
}

// n / p (either case): the next or the previous nucleus, as both viewers step through them.
export const STEP_KEYS = { n: 1, N: 1, p: -1, P: -1 };

// describe(), headed by where the nucleus is in the viewer's order ("3 of 40").
export function describeAt(place, nucleus, labelSets, sets, colour) {
  const card = describe(nucleus, labelSets, sets, colour);
  card.prepend(el("p", { className: "muted small" }, place));
  return card;
}

// {label_set_id: {name, classes: {index: {index, name, color}}}} from the API's label_sets list.
export function indexLabelSets(labelSets) {
  const sets = {};
  labelSets.forEach((ls) => {
    const classes = {};
    ls.classes.forEach((c) => { classes[c.index] = c; });
    sets[ls.id] = { name: ls.name, classes };
  });
  return sets;
}
