// The user's review keys (webapp.review.keys), shared by the review page and the gallery: the page
// carries them as JSON in <script id="review-keys" type="application/json">; this says what a key
// press means with them.

export function load() {
  const node = document.getElementById("review-keys");
  const keys = node ? JSON.parse(node.textContent) : {};
  return { classes: keys.classes || [], actions: keys.actions || {} };
}

// A keydown as keys are stored: "Enter", or one character (letters in lower case).
export function keyOf(event) {
  if (event.key === "Enter") return "Enter";
  return event.key && event.key.length === 1 ? event.key.toLowerCase() : null;
}

// { action: "accept" | "skip" | "undo" | "help" | "zoom" }, { classPosition: n } (0 = the first class), or null.
export function meaning(keys, event) {
  const key = keyOf(event);
  if (key == null) return null;
  for (const [action, bound] of Object.entries(keys.actions)) if (bound === key) return { action };
  const position = keys.classes.indexOf(key);
  return position >= 0 ? { classPosition: position } : null;
}

// A key press that is not for the review keys: with a modifier (the browser's shortcuts), or typed
// into a field of the page.
export function notForReview(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return true;
  return ["input", "select", "textarea"].includes((event.target.tagName || "").toLowerCase());
}
