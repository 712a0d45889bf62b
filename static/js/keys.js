// The user's review keys (webapp.review.keys), shared by the review page and the gallery: the page
// carries them as JSON in <script id="review-keys" type="application/json">; this says what a key
// press means with them.

export function load() {
  const node = document.getElementById("review-keys");
  const keys = node ? JSON.parse(node.textContent) : {};
  // characterKeys false: the user turned single-character keys off (WCAG 2.1.4); Enter still accepts.
  return { classes: keys.classes || [], actions: keys.actions || {}, characterKeys: keys.character_keys !== false };
}

// A keydown as keys are stored: "Enter", or one character (letters in lower case).
export function keyOf(event) {
  if (event.key === "Enter") return "Enter";
  return event.key && event.key.length === 1 ? event.key.toLowerCase() : null;
}

// { action: "accept" | "skip" | "undo" | "help" | "zoom" }, { classPosition: n } (0 = the first class), or null.
export function meaning(keys, event) {
  const key = keyOf(event);
  if (key == null || (!keys.characterKeys && key !== "Enter")) return null;
  for (const [action, bound] of Object.entries(keys.actions)) if (bound === key) return { action };
  const position = keys.classes.indexOf(key);
  return position >= 0 ? { classPosition: position } : null;
}

// Controls that act on Enter or Space themselves: a keyboard user who tabbed to "Skip" or a link and
// pressed Enter means that control, not the review key bound to Enter.
const CONTROLS = "a[href], button, summary, [role=button], [role=link], [contenteditable]";

// A key press that is not for the review keys: with a modifier (the browser's shortcuts), typed into a
// field of the page, or Enter or Space on a focused control.
export function notForReview(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return true;
  const target = event.target;
  if (["input", "select", "textarea"].includes((target.tagName || "").toLowerCase())) return true;
  return (event.key === "Enter" || event.key === " ") && Boolean(target.closest && target.closest(CONTROLS));
}

// After a button is clicked with the mouse, give the focus back to the page so that the review keys (Enter:
// accept) go on working; a button pressed from the keyboard (a click with detail 0) keeps it, where a keyboard
// or screen-reader user left it.
export function unfocusAfterMouseClick(event, button) {
  if (event.detail > 0) button.blur();
}
