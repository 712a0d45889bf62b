// Pages that reload themselves once a job ends (an import, a training, a deletion blocked) keep the reader's
// place: the reload put the focus back at the top of the page, so a keyboard or screen-reader user started over
// and lost where they were. The element holding the focus is remembered (its nearest ancestor with an id) and
// focused again after the load, or else the element the URL's #fragment names.
const KEY = "focus-after-reload";

export function reloadKeepingFocus(url) {
  const place = document.activeElement && document.activeElement !== document.body
    ? document.activeElement.closest("[id]") : null;
  if (place) sessionStorage.setItem(KEY, place.id);
  if (url) window.location.assign(url);
  else window.location.reload();
}

export function restoreFocus() {
  const id = sessionStorage.getItem(KEY);
  sessionStorage.removeItem(KEY);
  let target = (id && document.getElementById(id)) || (window.location.hash.length > 1
    && document.getElementById(decodeURIComponent(window.location.hash.slice(1))));
  // Hidden in the new page (a finished job's card): the nearest shown element around it that has an id.
  while (target && !target.checkVisibility()) target = target.parentElement?.closest("[id]");
  if (!target) return;
  if (!target.matches("a[href], button, input, select, textarea, [tabindex]")) target.setAttribute("tabindex", "-1");
  target.focus();
}
