import { api } from "./api.js";
import { reloadKeepingFocus } from "./reload.js";

// Confirmation before a destructive form is sent (the server checks again; these only save a mistake).
//  - form[data-confirm]: asks the browser's confirm dialog with that text;
//  - form[data-confirm-name]: its submit button stays disabled until the input[name=confirm_name]
//    holds exactly that name (typed, as on GitHub's "delete repository").
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});

document.querySelectorAll("form[data-confirm-name]").forEach((form) => {
  const input = form.querySelector("input[name=confirm_name]");
  const button = form.querySelector("button[type=submit]");
  if (!input || !button) return;
  const update = () => { button.disabled = input.value !== form.dataset.confirmName; };
  input.addEventListener("input", update);
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
