// What every page does, loaded by base.html before the page's own module: the per-element styles
// the templates leave in data attributes (dom.js), and forms that submit when a select changes.
import { applyDataStyles } from "./dom.js";

// <select data-autosubmit> submits its form on change (no inline onchange handler under the CSP).
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof Element && target.matches("[data-autosubmit]") && target.form) target.form.submit();
});

applyDataStyles();
