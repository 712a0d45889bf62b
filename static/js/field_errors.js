// A refusal that names fields of a form (a 400's `errors`: the server's messages by field, as DRF gives them)
// shown beside those fields: each message just after its field, the field marked aria-invalid and described by
// the message (aria-describedby, so that a screen reader reads it with the field), and the focus on the first of
// them. What names no field of the form (non_field_errors, a field the form does not have) stays with the form's
// alert, as does any other refusal (a conflict, no connection). A field's message goes as soon as the user edits
// that field; the others stay until the form is sent again.
import { el } from "./dom.js";

const NON_FIELD = "non_field_errors";

// The messages of one field as one line: DRF nests a list field's by item ({"0": [...]}).
const words = (value) => (value && typeof value === "object"
  ? Object.values(value).map(words).filter(Boolean).join(" ") : String(value ?? ""));

const controlsNamed = (form, name) => [...form.elements].filter((control) => control.name === name);

function describe(control, id, on) {
  const ids = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter((token) => token && token !== id);
  if (on) ids.push(id);
  if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
  else control.removeAttribute("aria-describedby");
}

function removeMessage(form, message) {
  for (const control of controlsNamed(form, message.dataset.errorFor)) {
    control.removeAttribute("aria-invalid");
    describe(control, message.id, false);
  }
  message.remove();
}

// Take away what showFieldErrors put in the form (before it is sent again).
export function clearFieldErrors(form) {
  form.querySelectorAll("[data-error-for]").forEach((message) => removeMessage(form, message));
}

// Editing a field (typing, choosing another file, ticking a box) takes its message away: what the server said
// was about the value it was sent.
const clearingOnEdit = new WeakSet();
function clearOnEdit(form) {
  if (clearingOnEdit.has(form)) return;
  clearingOnEdit.add(form);
  const edited = (event) => {
    const name = event.target && event.target.name;
    if (!name) return;
    form.querySelectorAll("[data-error-for]").forEach((message) => {
      if (message.dataset.errorFor === name) removeMessage(form, message);
    });
  };
  form.addEventListener("input", edited);
  form.addEventListener("change", edited);
}

// Returns what is left for the form's alert: null when the error named no field of the form (the caller says
// what it always said), "" when every message went beside its field, else the other messages.
// ``aliases``: the server's name of a field -> the form's control it is about, where the two differ (the slide
// upload form sends its files as upload ids, and a file's upload is refused by its `filename` or `size`).
export function showFieldErrors(form, err, { aliases = {} } = {}) {
  clearFieldErrors(form);
  const errors = err && err.data && err.data.errors;
  if (!errors || typeof errors !== "object" || Array.isArray(errors)) return null;
  const left = [];
  const byControl = new Map();   // the form's field name -> its messages (two of the server's may name one)
  for (const [name, messages] of Object.entries(errors)) {
    const text = words(messages);
    const control = name === NON_FIELD ? null : (aliases[name] || name);
    if (!control || !controlsNamed(form, control).length) {
      left.push(name === NON_FIELD ? text : `${name}: ${text}`);
      continue;
    }
    byControl.set(control, [...(byControl.get(control) || []), text]);
  }
  const invalid = [];
  for (const [name, texts] of byControl) {
    const controls = controlsNamed(form, name);
    // After the field's label (a group of checkboxes: after the last), not inside it: the label names the field.
    const last = controls[controls.length - 1];
    const message = el("span", { className: "field-error", id: `${form.id}-${name}-error`, data: { errorFor: name } },
                       texts.join(" "));
    (last.closest("label") || last).after(message);
    for (const control of controls) {
      control.setAttribute("aria-invalid", "true");
      describe(control, message.id, true);
    }
    invalid.push(controls[0]);
  }
  if (!invalid.length) return null;
  clearOnEdit(form);
  invalid.sort((a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
  invalid[0].focus();
  return left.join("; ");
}
