// Review in the browser: the active-learning queue, one nucleus at a time, decided with the keyboard
// (the user's own keys, keys.js) or the mouse. This module is the page's controller: it asks the
// queue for the next nucleus, saves decisions, skips and undoes; review_view.js draws, and
// review_progress.js keeps the figures. The gallery is gallery.js.
//
// Every decision is saved at once through the outbox (outbox.js): kept in localStorage, sent with
// keepalive so that closing the tab does not lose it, and dropped only when the server answered. A
// failed save is shown and retried; the same client_id makes a retry harmless.
import { api } from "./api.js";
import { nucleusName } from "./format.js";
import * as reviewKeys from "./keys.js";
import { Outbox, clientId, sendDecisions } from "./outbox.js";
import { ReviewProgress } from "./review_progress.js";
import { ReviewView } from "./review_view.js";

// The API's URLs for one nucleus come as a template with 0 for its id.
const urlFor = (template, id) => template.replace("/0/", `/${id}/`);
// The caption once the project is no longer the reviewer's to review (removed, or a role below reviewer).
const NO_ACCESS = "not reserved: you can no longer review this project";

function reviewPage(root) {
  const d = root.dataset;
  const labelSet = d.labelSet;
  const secondOpinions = d.includeLabelled === "1";
  const view = new ReviewView(root);
  const { buttons, stage, crop } = view;
  const outbox = new Outbox(`review-outbox:${d.project}:${labelSet}:${d.user}`);
  const keys = reviewKeys.load();
  const progress = new ReviewProgress({ secondOpinions });
  let item = null;
  let busy = false;
  let zoomedOut = false;   // the neighbourhood instead of the close-up; each new nucleus opens close up

  const query = (extra = {}) => {
    const params = new URLSearchParams({ label_set: labelSet, strategy: d.strategy });
    if (secondOpinions) params.set("include_labelled", "1");
    for (const [k, v] of Object.entries(extra)) if (v !== "" && v != null) params.set(k, v);
    return params.toString();
  };
  const setStatus = (text, kind) => view.setStatus(text, kind);

  function setZoom(out) {
    if (!item || out === zoomedOut) return;
    zoomedOut = out;
    view.showView(item, zoomedOut);
  }

  // ---------------------------------------------------------------- queue
  async function loadNext() {
    busy = true;
    view.setLoading(true);
    let next;
    try {
      next = await api(`${d.nextUrl}?${query({ exclude: outbox.nuclei().join(",") })}`);
    } catch (err) {
      if (!err.status) {
        view.setLoading(false);
        setStatus("Could not load the next nucleus (no connection); retrying…", "error");
        setTimeout(loadNext, 3000);
        return;
      }
      busy = false;
      view.setLoading(false);
      if (err.status === 403 || err.status === 404) view.endLease(NO_ACCESS);
      setStatus(`Could not load the next nucleus: ${err.message}`, "error");
      return;
    }
    busy = false;
    item = next;  // null: the queue is empty (204)
    zoomedOut = false;
    view.render(item, zoomedOut);
    view.setReady();
  }

  // The server's figures, at most `delay` after a decision. A refresh already due is not put off by the next
  // decision: a reviewer deciding faster than the delay saw only the page's own counts, which drift (an undo
  // cannot take its decision off the agreement, second opinions leave the queue's count as it was).
  let progressTimer = null;
  function refreshProgress(delay = 0) {
    if (progressTimer !== null) return;
    progressTimer = setTimeout(async () => {
      progressTimer = null;
      try {
        progress.update(await api(`${d.progressUrl}?${query()}`));
        view.showProgress(progress);
      } catch (err) { /* the figures refresh after the next decision */ }
    }, delay);
  }

  function countDecision(entry, sign) {
    progress.count(entry, sign);
    view.showProgress(progress);
  }

  // ---------------------------------------------------------------- decisions
  const sendDecision = (entry) => sendDecisions(urlFor(d.labelsUrl, entry.nucleus), {
    label_set: entry.label_set, class_name: entry.class_name, version: entry.version,
    client_id: entry.client_id, second_opinion: Boolean(entry.second_opinion),
    model_version: entry.model_version ?? null,
  });

  // A key pressed before the nucleus's tissue is on screen decides nothing, and says so.
  function tissueStillLoading() {
    if (view.tissueLoading) setStatus("The tissue is still loading: nothing decided.", "pending");
    return view.tissueLoading;
  }

  async function decide(classIndex) {
    if (!item || busy || tissueStillLoading()) return;
    const cls = view.classOf(classIndex);
    if (!cls) return;
    const entry = {
      client_id: clientId(), nucleus: item.nucleus.id, instance_id: item.nucleus.instance_id, image: item.image.name,
      label_set: labelSet, class_index: cls.index,
      class_name: cls.name, version: item.version, second_opinion: secondOpinions,
      predicted: item.prediction ? item.prediction.class_index : null, at: Date.now(),
      // The version whose prediction is on screen: the decision is scored against it, even if another
      // version is made active before the save arrives.
      model_version: item.prediction && item.prediction.model_version ? item.prediction.model_version.number : null,
    };
    outbox.add(entry);
    busy = true;
    setStatus(`Saving ${cls.name}…`, "pending");
    const outcome = await sendDecision(entry);
    busy = false;
    if (outcome.kind === "saved") {
      outbox.remove(entry.client_id);
      countDecision(entry, +1);
      setStatus(`Saved: ${nucleusName(entry.instance_id, entry.image)} is ${cls.name}.`, "ok");
      refreshProgress(1500);
      await loadNext();
    } else if (outcome.kind === "conflict" && (outcome.data.already_decided || outcome.data.being_deleted)) {
      // Another reviewer's decision stands, or the nucleus's dataset is being deleted: this nucleus is done, the
      // queue moves on. The message names the nucleus it is about, since the next one is on screen by the time
      // it is read.
      outbox.remove(entry.client_id);
      await loadNext();
      const which = nucleusName(entry.instance_id, entry.image);
      setStatus(`${which[0].toUpperCase()}${which.slice(1)}: ${outcome.data.detail}`, "error conflict");
      refreshProgress(500);   // it left the queue: "left in queue" is one less
    } else if (outcome.kind === "conflict") {
      outbox.remove(entry.client_id);
      const current = outcome.data.current;
      item.current = current || null;
      item.version = current ? current.version : null;
      view.renderCurrent(item);
      view.draw(item, zoomedOut);
      setStatus(`${outcome.data.detail || "The label changed meanwhile."}`, "error conflict");
    } else if (outcome.kind === "rejected") {
      outbox.remove(entry.client_id);
      if (outcome.status === 403 || outcome.status === 404) view.endLease(NO_ACCESS);
      setStatus(`Not saved: ${outcome.data.detail || `HTTP ${outcome.status}`}`, "error");
    } else {
      setStatus(`Not saved yet (${outcome.detail}): kept in this browser, retrying…`, "error");
      outbox.retryLater(flushOutbox, 4000);
      await loadNext();
    }
  }

  // Send what the outbox holds, oldest first; stop at the first that cannot be sent and try again later.
  async function flushOutbox() {
    const pending = outbox.items;
    if (!pending.length) return;
    for (const entry of pending) {
      const outcome = await sendDecision(entry);
      if (outcome.kind === "failed") {
        setStatus(`${outbox.items.length} decision(s) not saved yet (${outcome.detail}); retrying…`, "error");
        outbox.retryLater(flushOutbox, 6000);
        return;
      }
      outbox.remove(entry.client_id);
      if (outcome.kind === "saved") {
        countDecision(entry, +1);
      } else if (outcome.kind === "conflict") {
        setStatus(`A decision saved late was refused: ${outcome.data.detail || "the label changed meanwhile"}`,
                  "error conflict");
      } else {
        setStatus(`A decision saved late was refused: ${outcome.data.detail || outcome.status}`, "error");
      }
    }
    if (!outbox.items.length && view.showsFailure()) setStatus("All decisions saved.", "ok");
    refreshProgress(500);
  }

  function accept() {
    if (!item) return;
    if (!item.prediction) {
      // The user's own keys that choose a class in this label set (keys.js).
      const classKeys = keys.characterKeys ? keys.classes.slice(0, buttons.length) : [];
      setStatus(`No prediction to accept: choose a class with ${classKeys.join(", ") || "the buttons"}.`, "error");
      return;
    }
    decide(item.prediction.class_index);
  }

  async function skip() {
    if (!item || busy || tissueStillLoading()) return;
    busy = true;
    try {
      await api(urlFor(d.skipUrl, item.nucleus.id), { method: "POST", body: { label_set: labelSet } });
    } catch (err) {
      busy = false;
      if (err.status) setStatus(`Could not skip: ${err.detail || err.status}`, "error");
      else setStatus("Could not skip (no connection).", "error");
      return;
    }
    busy = false;
    setStatus(`Skipped ${nucleusName(item.nucleus.instance_id, item.image.name)}.`, "");
    await loadNext();
  }

  async function undo() {
    if (busy) return;
    // A decision still waiting in the outbox never reached the server: dropping it undoes it.
    const pending = outbox.items;
    if (pending.length) {
      const last = pending[pending.length - 1];
      outbox.remove(last.client_id);
      setStatus(`Unsaved decision on ${nucleusName(last.instance_id, last.image)} dropped.`, "ok");
      return;
    }
    busy = true;
    let undone;
    try {
      undone = await api(d.undoUrl, { method: "POST", body: { label_set: labelSet, client_id: clientId() } });
    } catch (err) {
      busy = false;
      setStatus(err.status ? `Nothing undone: ${err.message}` : "Could not undo (no connection).", "error");
      return;
    }
    busy = false;
    // The undone nucleus comes back to this reviewer next; the one that was on screen goes back to the queue
    // at once rather than staying theirs, unseen, until its lease runs out.
    if (item && item.nucleus.id !== undone.nucleus) release(item);
    const back = undone.restored ? `back to ${undone.restored.class_name}` : "unlabelled again";
    setStatus(`Undone: ${undone.undone.class_name} on ${nucleusName(undone.instance_id, undone.image_name)} (${back}).`,
              "ok");
    progress.uncountToday();
    view.showProgress(progress);
    refreshProgress(1000);
    await loadNext();
  }

  // ---------------------------------------------------------------- input
  buttons.forEach((b) => b.addEventListener("click", (event) => {
    reviewKeys.unfocusAfterMouseClick(event, b);
    decide(Number(b.dataset.classIndex));
  }));
  const actions = { accept, skip, undo, help: () => view.toggleHelp(), zoom: () => setZoom(!zoomedOut) };
  document.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", (event) => {
    reviewKeys.unfocusAfterMouseClick(event, b);
    actions[b.dataset.action]();
  }));
  document.addEventListener("keydown", (e) => {
    if (reviewKeys.notForReview(e)) return;
    // The user's own keys (keys.js): class keys by position, then the actions.
    const meant = reviewKeys.meaning(keys, e);
    if (view.help.open && !(meant && meant.action === "help")) return;
    let handled = true;
    if (meant && meant.classPosition != null) {
      const button = buttons[meant.classPosition];
      if (button) decide(Number(button.dataset.classIndex)); else handled = false;
    } else if (meant && Object.hasOwn(actions, meant.action)) actions[meant.action]();
    else handled = false;
    if (handled) e.preventDefault();
  });
  // The mouse wheel over the tissue: back (down) zooms out to the neighbourhood, forward comes close up.
  stage.addEventListener("wheel", (e) => {
    if (!item || e.deltaY === 0) return;
    e.preventDefault();
    setZoom(e.deltaY > 0);
  }, { passive: false });
  crop.addEventListener("error", () => { if (item) setStatus("The tissue image could not be loaded.", "error"); });
  // Give a nucleus shown here back to the queue without deciding it. Only the lease this page was given: a
  // reload's claim may already have renewed it for the new page.
  function release(shownItem) {
    const body = { label_set: labelSet, ...(shownItem.lease ? { expires_at: shownItem.lease.expires_at } : {}) };
    api(urlFor(d.releaseUrl, shownItem.nucleus.id), { method: "POST", keepalive: true, body })
      .catch(() => { /* the lease expires by itself */ });
  }
  // Leaving the page gives the nucleus on screen back to the queue at once (else its lease expires).
  window.addEventListener("pagehide", () => {
    if (!item || outbox.nuclei().includes(item.nucleus.id)) return;
    release(item);
  });
  // Back to this page from the browser's cache: its nucleus was given back when it was left (pagehide), so
  // the reservation it shows is no longer true and another reviewer may have it. Ask the server afresh.
  window.addEventListener("pageshow", (event) => { if (event.persisted) window.location.reload(); });
  outbox.flushWhenOnline(flushOutbox);

  view.showProgress(progress);
  flushOutbox().then(loadNext);
  refreshProgress();
}

const review = document.getElementById("review");
if (review) reviewPage(review);
