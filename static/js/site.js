// What every page does, loaded by base.html before the page's own module: the per-element styles
// the templates leave in data attributes (dom.js), and forms that submit when a select changes.
import { onChosen } from "./choice.js";
import { applyDataStyles } from "./dom.js";
import { restoreFocus } from "./reload.js";

// [data-autosubmit] submits its form when chosen (no inline onchange handler under the CSP): a checkbox on
// change, a select once chosen (choice.js: not on each arrow key of a keyboard user passing its options).
document.querySelectorAll("[data-autosubmit]").forEach((control) => {
  if (!control.form) return;
  if (control instanceof HTMLSelectElement) onChosen(control, () => control.form.submit(), { onBlur: true });
  else control.addEventListener("change", () => control.form.submit());
});

// A select marked aria-disabled (not disabled: it stays in the Tab order, its reason heard as its description)
// keeps the value it came with.
document.querySelectorAll('select[aria-disabled="true"]').forEach((select) => {
  const kept = select.value;
  select.addEventListener("change", () => { select.value = kept; });
});

applyDataStyles();
// After the load event: focused while the page still loaded, the element lost the focus again (Chromium).
window.addEventListener("load", () => setTimeout(restoreFocus, 0), { once: true });
