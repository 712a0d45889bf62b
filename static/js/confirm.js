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
