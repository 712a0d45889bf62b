// A <select> whose choice acts at once (saves a label, loads another page) must not act on every arrow key:
// on a closed select, Chrome and Firefox change the value with ArrowUp/ArrowDown, so a keyboard user moving
// past the options would act on each one (WCAG 3.2.2). A choice made with the mouse, or in the opened list
// (Space or Alt+ArrowDown opens it), acts on change; one made with the arrow keys on the closed select
// waits for Enter, and, with `onBlur`, for leaving the select.
export function onChosen(select, act, { onBlur = false } = {}) {
  let keyed = false;
  let pending = false;
  select.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      keyed = false;
      if (pending) {
        pending = false;
        event.preventDefault();
        act();
      }
      return;
    }
    keyed = event.key !== " " && !event.altKey;
  });
  select.addEventListener("pointerdown", () => { keyed = false; });
  select.addEventListener("change", () => {
    if (keyed) {
      pending = true;
      return;
    }
    pending = false;
    act();
  });
  if (onBlur) select.addEventListener("blur", () => { if (pending) { pending = false; act(); } });
}
