// The one way the pages talk to the server's JSON API. Every request goes with the session cookie
// (same origin), asks for JSON, and sends a JSON body unless it is FormData or a Blob; a request that
// changes something carries the CSRF token. A refusal becomes an ApiError with the server's `detail`,
// so that a page shows the reason the server gave. tests/webapp/core/test_escaping.py keeps fetch() and
// the CSRF token out of every other module.

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
// A proxy or a restarting server answers these; the same request a moment later usually succeeds.
const RETRY_STATUSES = new Set([502, 503, 504]);
const RETRY_BASE_MS = 300;

// status 0: no answer at all (no connection, the server down); else the HTTP status. `detail` and
// `code` are the server's (null when it sent no JSON), `data` its whole answer (a 409's extras).
export class ApiError extends Error {
  constructor(message, { status = 0, detail = null, code = null, data = null, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.code = code;
    this.data = data;
  }
}

// base.html renders Django's token into <meta name="csrf-token">. Read from the page rather than the
// csrftoken cookie, it works as well with CSRF_COOKIE_HTTPONLY or CSRF_USE_SESSIONS on.
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function readJson(response) {
  if (response.status === 204) return null;
  try { return await response.json(); } catch (err) { return null; }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// 300 ms, 900 ms, 2.7 s..., each with up to a third more so that many pages do not retry in step.
const backoff = (attempt) => RETRY_BASE_MS * 3 ** (attempt - 1) * (1 + Math.random() / 3);

// api(url, {method, body, headers, keepalive, signal, retries}) -> the answer's JSON (null for 204 or none).
//  - retries: how many times a lost connection or a 502/503/504 is tried again, with backoff. Safe
//    methods (GET, HEAD) retry twice unless told otherwise; a POST or PUT only when the caller says
//    that repeating it is harmless (the review outbox: its client_id makes a repeat a no-op).
//  - keepalive: the request outlives the page (a decision sent as the tab closes).
//  - signal: an AbortController's; an aborted request rejects with the browser's AbortError.
//  - timeout: milliseconds to wait for each try's answer; a try that gets none counts as a lost
//    connection (a stalled server would otherwise leave the page "Saving…" for ever).
export async function api(url, { method = "GET", body, headers = {}, keepalive = false, signal, retries,
                                 timeout } = {}) {
  const verb = method.toUpperCase();
  const init = { method: verb, credentials: "same-origin", keepalive, signal, headers: { Accept: "application/json" } };
  if (!SAFE_METHODS.has(verb)) init.headers["X-CSRFToken"] = csrfToken();
  if (body instanceof FormData || body instanceof Blob) {
    init.body = body;  // the browser sets the multipart boundary; a Blob's type comes in `headers`
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  Object.assign(init.headers, headers);
  const attempts = 1 + (retries ?? (SAFE_METHODS.has(verb) ? 2 : 0));

  for (let attempt = 1; ; attempt += 1) {
    let response;
    if (timeout) {
      const timer = AbortSignal.timeout(timeout);
      init.signal = signal ? AbortSignal.any([signal, timer]) : timer;
    }
    try {
      response = await fetch(url, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;   // the caller's; a timeout is a "TimeoutError"
      if (attempt < attempts) {
        await sleep(backoff(attempt));
        if (signal) signal.throwIfAborted();
        continue;
      }
      const what = err.name === "TimeoutError" ? `no answer within ${timeout / 1000} s` : err.message || "no connection";
      throw new ApiError(what, { cause: err });
    }
    if (RETRY_STATUSES.has(response.status) && attempt < attempts) {
      await sleep(backoff(attempt));
      if (signal) signal.throwIfAborted();
      continue;
    }
    const data = await readJson(response);
    if (response.ok) return data;
    const detail = data && typeof data.detail === "string" ? data.detail : null;
    throw new ApiError(detail || `HTTP ${response.status}`, {
      status: response.status, detail, code: (data && data.code) || null, data,
    });
  }
}
