// Dataset upload: post the form with fetch() to the API, then follow the import job live (jobs.js).
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
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
    done.replaceChildren();
    done.append(`Imported ${r.images} images and ${r.nuclei} nuclei. `);
    if (r.dataset_id) {
      const link = document.createElement("a");
      link.href = `${location.pathname.replace(/\/$/, "")}/datasets/${r.dataset_id}/`;
      link.textContent = `Open ${r.dataset}`;
      done.append(link);
    }
    if (following === current.id) {
      // The Datasets and Label sets cards are drawn by the server: load the page again, which shows
      // this job's card again (?import_job=) under cards that list the new dataset.
      following = null;
      form.reset();
      done.append(" · refreshing the page…");
      setTimeout(() => location.assign(`${location.pathname}?import_job=${current.id}#upload`), 800);
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = new FormData(form);
    body.set("labelled", form.elements.labelled.checked ? "true" : "false");
    if (!body.get("label_set")) body.delete("label_set");
    button.disabled = true;
    button.textContent = "Uploading…";
    let response, payload = {};
    try {
      response = await fetch(form.dataset.url, {
        method: "POST", body, credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": form.elements.csrfmiddlewaretoken.value },
      });
      payload = await response.json().catch(() => ({}));
    } catch (err) {
      showError(`The upload failed: ${err.message}`);
      return;
    } finally {
      button.disabled = false;
      button.textContent = "Upload";
    }
    if (!response.ok) {
      showError(payload.detail || `The upload failed (HTTP ${response.status}).`);
      return;
    }
    const job = payload.job;
    card.hidden = false;
    card.dataset.jobUrl = job.url;
    field("error").hidden = true;
    field("done").hidden = true;
    following = job.id;
    window.watchJob(card);  // the form keeps its values until the import succeeds: a failed one is easy to retry
  });
})();
