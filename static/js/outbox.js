// Review decisions that the server has not confirmed yet, shared by the review page and the gallery.
//
// A decision is put in the outbox (localStorage, per project, label set and user) before it is sent,
// sent with keepalive so that closing the tab does not lose it, and leaves the outbox only once the
// server has answered. One that could not be sent stays and is sent again later, on a timer, when the
// browser is back online, or when the page is next opened. Each decision carries a client_id made
// here: the server records a repeated one once, so a retry can never count a decision twice.
import { api, ApiError } from "./api.js";

export function clientId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  constructor(storageKey) {
    this.key = storageKey;
    this.retryTimer = null;
  }

  // The decisions waiting, oldest first; each is an object with at least client_id.
  get items() {
    try { return JSON.parse(localStorage.getItem(this.key) || "[]"); } catch (err) { return []; }
  }

  set items(list) {
    if (list.length) localStorage.setItem(this.key, JSON.stringify(list));
    else localStorage.removeItem(this.key);
  }

  add(...entries) { this.items = [...this.items, ...entries]; }

  remove(...clientIds) {
    const gone = new Set(clientIds);
    this.items = this.items.filter((entry) => !gone.has(entry.client_id));
  }

  // The nuclei decided here but not saved yet (the review queue must not offer them again).
  nuclei() { return this.items.map((entry) => entry.nucleus); }

  // Call flush() after `delay` ms; a later call replaces an earlier one (one retry pending at most).
  retryLater(flush, delay) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(flush, delay);
  }

  // Call flush() when the browser says it is back online.
  flushWhenOnline(flush) { window.addEventListener("online", () => flush()); }
}

// POST decisions from the outbox. The answer, as the pages act on it:
//   {kind: "saved", data}                  2xx: the server recorded them;
//   {kind: "conflict", data, status}       409: the label changed meanwhile, or another reviewer decided;
//   {kind: "rejected", data, status}       another 4xx, which sending again cannot fix;
//   {kind: "failed", status, detail}       no answer, 408, 429 or 5xx: keep them and send again later.
// A lost connection or a 502/503/504 is retried at once a few times (api.js) before it counts as failed.
// A try that gets no answer in this time counts as lost: after the retries the decisions are kept here and
// sent again later, so that a stalled server leaves the reviewer a message instead of "Saving…" for ever (the
// client_id makes a repeat harmless).
const SAVE_TIMEOUT_MS = 6000;

export async function sendDecisions(url, body) {
  try {
    return { kind: "saved", data: await api(url, { method: "POST", body, keepalive: true, retries: 2,
                                                   timeout: SAVE_TIMEOUT_MS }) };
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    const data = err.data || {};
    if (err.status === 409) return { kind: "conflict", data, status: err.status };
    if (err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
      return { kind: "rejected", data, status: err.status };
    }
    const silent = err.cause && err.cause.name === "TimeoutError" ? "no answer from the server" : "no connection";
    return { kind: "failed", status: err.status, detail: err.status ? `HTTP ${err.status}` : silent };
  }
}
