// The user's review keys (webapp.review.keys), shared by the review page and the gallery: the page
// carries them as JSON in <script id="review-keys" type="application/json">; this says what a key
// press means with them.
(function () {
  "use strict";

  function load() {
    const node = document.getElementById("review-keys");
    const keys = node ? JSON.parse(node.textContent) : {};
    return { classes: keys.classes || [], actions: keys.actions || {} };
  }

  // A keydown as keys are stored: "Enter", or one character (letters in lower case).
  function keyOf(event) {
    if (event.key === "Enter") return "Enter";
    return event.key && event.key.length === 1 ? event.key.toLowerCase() : null;
  }

  // { action: "accept" | "skip" | "undo" | "help" }, { classPosition: n } (0 = the first class), or null.
  function meaning(keys, event) {
    const key = keyOf(event);
    if (key == null) return null;
    for (const [action, bound] of Object.entries(keys.actions)) if (bound === key) return { action };
    const position = keys.classes.indexOf(key);
    return position >= 0 ? { classPosition: position } : null;
  }

  window.reviewKeys = { load, keyOf, meaning };
})();
