// A refusal that names fields of a form (a 400's `errors`: the server's messages by field, as DRF gives them)
// shown beside those fields: each message just after its field, the field marked aria-invalid and described by
// the message (aria-describedby, so that a screen reader reads it with the field), and the focus on the first of
// them. What names no field of the form (non_field_errors, a field the form does not have) stays with the form's
// alert, as does any other refusal (a conflict, no connection).
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

// Take away what showFieldErrors put in the form (before it is sent again).
export function clearFieldErrors(form) {
  form.querySelectorAll("[data-error-for]").forEach((message) => {
    for (const control of controlsNamed(form, message.dataset.errorFor)) {
      control.removeAttribute("aria-invalid");
      describe(control, message.id, false);
    }
    message.remove();
  });
}

// Returns what is left for the form's alert: null when the error named no field of the form (the caller says
// what it always said), "" when every message went beside its field, else the other messages.
export function showFieldErrors(form, err) {
  clearFieldErrors(form);
  const errors = err && err.data && err.data.errors;
  if (!errors || typeof errors !== "object" || Array.isArray(errors)) return null;
  const left = [];
  const invalid = [];
  for (const [name, messages] of Object.entries(errors)) {
    const text = words(messages);
    const controls = name === NON_FIELD ? [] : controlsNamed(form, name);
    if (!controls.length) {
      left.push(name === NON_FIELD ? text : `${name}: ${text}`);
      continue;
    }
    // After the field's label (a group of checkboxes: after the last), not inside it: the label names the field.
    const last = controls[controls.length - 1];
    const message = el("span", { className: "field-error", id: `${form.id}-${name}-error`, data: { errorFor: name } },
                       text);
    (last.closest("label") || last).after(message);
    for (const control of controls) {
      control.setAttribute("aria-invalid", "true");
      describe(control, message.id, true);
    }
    invalid.push(controls[0]);
  }
  if (!invalid.length) return null;
  invalid.sort((a, b) => (a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1));
  invalid[0].focus();
  return left.join("; ");
}
