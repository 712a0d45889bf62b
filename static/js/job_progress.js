// A job's card followed live: poll the job resource until it finishes and update the card in place
// (state, progress bar, the progress line, the worker's log, the error). Each answer is also sent as a
// "job-update" event on the card, for the page that started the job (upload.js, slides.js, training.js).
import { api } from "./api.js";
import { setPercent } from "./dom.js";

// 45 s, 12 min, 1 h 05 min: an ETA as people read it.
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  const minutes = Math.round(s / 60);
  return minutes < 90 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

// card: an element with data-job-url and the [data-field] elements that show the job.
export function watchJob(card) {
  const url = card.dataset.jobUrl;
  let polls = 0;
  const field = (name) => card.querySelector(`[data-field="${name}"]`);
  async function tick() {
    let job;
    try {
      job = await api(url);
    } catch (err) {
      field("detail").textContent = `Could not refresh (${err.message}); retrying…`;
      setTimeout(tick, 3000);
      return;
    }
    const p = job.progress || {};
    const link = field("link");
    if (link) { link.textContent = `#${job.id}`; link.href = `/jobs/${job.id}/`; }
    // The state is announced when it changes (queued, running, succeeded...).
    field("state").setAttribute("aria-live", "polite");
    field("state").textContent = job.state;
    field("state").className = `state state-${job.state}`;
    const parts = [];
    if (p.models > 1) parts.push(`model ${p.model}/${p.models}`);
    if (p.stage) parts.push(`stage ${p.stage}`);
    if (p.epoch != null) parts.push(`epoch ${p.epoch}${p.epochs ? "/" + p.epochs : ""}`);
    if (p.loss != null) parts.push(`loss ${Number(p.loss).toFixed(4)}`);
    if (p.eta_s != null) parts.push(`about ${duration(p.eta_s)} left`);
    if (p.message) parts.push(p.message);
    const percent = `${Math.round(p.percent || 0)}%`;
    parts.push(percent);
    const done = ["succeeded", "failed", "cancelled"].includes(job.state);
    // A finished job's last progress line is history: no percentage or ETA beside "failed".
    let line;
    if (job.state === "succeeded") line = "done";
    else if (done) line = `${job.state}${p.message ? ` during: ${p.message}` : ""}`;
    else if (job.waiting) line = job.waiting;   // queued, and no worker takes its queue
    else line = parts.join(" · ");
    field("detail").textContent = line;
    // The bar (a progressbar named by its template) reads as the line does, with its percentage.
    setPercent(field("bar"), p.percent, line.endsWith(percent) ? line : `${percent}: ${line}`);
    // The worker's log: the steps of the job (stages, epochs, images), kept in its last 40 lines.
    field("log").textContent = job.log_tail || "";
    field("log").hidden = !job.log_tail;
    if (job.error) {
      field("error").setAttribute("role", "alert");
      field("error").hidden = false;
      field("error").textContent = job.error;
    }
    card.dispatchEvent(new CustomEvent("job-update", { detail: job }));
    polls += 1;
    // Short jobs (a small import) finish in about a second: look often at first.
    if (!done) setTimeout(tick, polls < 10 ? 300 : 1000);
  }
  tick();
}
