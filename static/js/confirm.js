import { api } from "./api.js";
import { reloadKeepingFocus } from "./reload.js";

// Confirmation before a destructive form is sent (the server checks again; these only save a mistake).
//  - form[data-confirm]: asks the browser's confirm dialog with that text;
//  - form[data-confirm-name]: its submit button is refused until the input[name=confirm_name] holds exactly
//    that name (typed, as on GitHub's "delete repository"). Marked aria-disabled, not disabled: it stays in the
//    Tab order and its description (the hint beside it) says why it does nothing yet; the form is not sent.
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});

document.querySelectorAll("form[data-confirm-name]").forEach((form) => {
  const input = form.querySelector("input[name=confirm_name]");
  const button = form.querySelector("button[type=submit]");
  if (!input || !button) return;
  const typed = () => input.value === form.dataset.confirmName;
  const update = () => {
    if (typed()) button.removeAttribute("aria-disabled"); else button.setAttribute("aria-disabled", "true");
  };
  input.addEventListener("input", update);
  form.addEventListener("submit", (event) => {
    if (typed()) return;
    event.preventDefault();   // the button, or Enter in the field
    if (document.activeElement !== button) input.focus();
  });
  update();
});

// A deletion refused while a job runs: the page loads itself again once that job has ended, with the form.
const blocked = document.getElementById("delete-blocked");
if (blocked) {
  const look = async () => {
    try {
      const job = await api(blocked.dataset.waitUrl);
      if (["succeeded", "failed", "cancelled"].includes(job.state)) { reloadKeepingFocus(); return; }
    } catch (err) { /* a network hiccup, or the job is gone from view: look again */ }
    setTimeout(look, 3000);
  };
  setTimeout(look, 3000);
}
