// Dataset upload: post the form with fetch() to the API, then follow the import job live (job_progress.js).
import { api } from "./api.js";
import { el, replace } from "./dom.js";
import { clearFieldErrors, showFieldErrors } from "./field_errors.js";
import { watchJob } from "./job_progress.js";
import { reloadKeepingFocus } from "./reload.js";

function uploadForm(form) {
  const card = document.getElementById("upload-job");
  const error = form.querySelector('[data-role="error"]');
  const button = form.querySelector('button[type="submit"]');
  const field = (name) => card.querySelector(`[data-field="${name}"]`);

  function showError(message) {
    error.textContent = message;
    error.hidden = false;
  }

  // Set while this page follows an import it started: its success reloads the page (below).
  let following = null;

  card.addEventListener("job-update", (e) => {
    const current = e.detail;
    if (current.state !== "succeeded" || !current.result) return;
    const done = field("done");
    const r = current.result;
    done.hidden = false;
    replace(done, `Imported ${r.images} images and ${r.nuclei} nuclei. `);
    if (r.dataset_id) {
      done.append(el("a", { href: `${location.pathname.replace(/\/$/, "")}/datasets/${r.dataset_id}/` }, `Open ${r.dataset}`));
    }
    if (r.prediction_job) {
      // The project has an active model version: it classifies the new nuclei in a job of its own.
      done.append(" · the active model's predictions of them follow in ",
                  el("a", { href: `/jobs/${r.prediction_job}/` }, `job #${r.prediction_job}`));
    }
    // Nuclei of the files that kept no pixel (wholly covered by later ones, outside their image) were left out:
    // the job's log below says how many for each reason, and in which images.
    const leftOut = Object.values(r.left_out || {}).reduce((sum, n) => sum + n, 0);
    if (leftOut) done.append(` · ${leftOut} of the files' nuclei left out, as the log below says`);
    if (following === current.id) {
      // The Datasets and Label sets cards are drawn by the server: load the page again, which shows
      // this job's card again (?import_job=) under cards that list the new dataset.
      following = null;
      form.reset();
      done.append(" · refreshing the page…");
      setTimeout(() => reloadKeepingFocus(`${location.pathname}?import_job=${current.id}#upload`), 800);
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    clearFieldErrors(form);
    const body = new FormData(form);
    body.set("labelled", form.elements.labelled.checked ? "true" : "false");
    if (!body.get("label_set")) body.delete("label_set");
    button.disabled = true;
    button.textContent = "Uploading…";
    let payload;
    try {
      payload = await api(form.dataset.url, { method: "POST", body });
    } catch (err) {
      button.disabled = false;
      button.textContent = "Upload";
      // The button was disabled while it sent, which dropped the focus to the page: give it back (an error is
      // announced by its role="alert"), or put it on the first field the server refused (field_errors.js).
      button.focus();
      const rest = showFieldErrors(form, err);
      if (rest === null) {
        showError(err.status ? err.detail || `The upload failed (HTTP ${err.status}).` : `The upload failed: ${err.message}`);
      } else if (rest) showError(rest);
      return;
    }
    button.disabled = false;
    button.textContent = "Upload";
    button.focus();
    const job = payload.job;
    card.hidden = false;
    card.dataset.jobUrl = job.url;
    field("error").hidden = true;
    field("done").hidden = true;
    following = job.id;
    watchJob(card);  // the form keeps its values until the import succeeds: a failed one is easy to retry
  });
}

const form = document.getElementById("upload-form");
if (form) uploadForm(form);
