// Whole-slide images on the project page: register one by its path under SLIDES_ROOT, or classify one with
// the active model; both post to the API and follow the job live (jobs.js), as the dataset upload does.
(function () {
  "use strict";
  const card = document.getElementById("slide-job");
  if (!card) return;
  const form = document.getElementById("slide-form");
  const field = (name) => card.querySelector(`[data-field="${name}"]`);
  const csrf = () => document.querySelector("input[name=csrfmiddlewaretoken]").value;
  let following = null;

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrf() },
    });
    const payload = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(payload.detail || `HTTP ${response.status}`);
    return payload.job;
  }

  function follow(job) {
    card.hidden = false;
    card.dataset.jobUrl = job.url;
    field("error").hidden = true;
    field("done").hidden = true;
    following = job.id;
    window.watchJob(card);
  }

  card.addEventListener("job-update", (e) => {
    const job = e.detail;
    if (job.state !== "succeeded" || !job.result) return;
    const r = job.result;
    const done = field("done");
    done.hidden = false;
    done.textContent = r.predictions != null
      ? `Classified ${r.nuclei} nuclei (${r.nuclei_per_s} nuclei/s).`
      : `Registered ${r.dataset}: ${r.nuclei} nuclei.`;
    if (following === job.id) {
      following = null;
      if (form) form.reset();
      done.append(" · refreshing the page…");
      setTimeout(() => location.assign(`${location.pathname}?slide_job=${job.id}#slides`), 800);
    }
  });

  if (form) {
    const error = form.querySelector('[data-role="error"]');
    const button = form.querySelector('button[type="submit"]');
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const body = {};
      for (const name of ["name", "path", "detections_path", "label_set"]) {
        if (form.elements[name].value) body[name] = form.elements[name].value;
      }
      button.disabled = true;
      try {
        follow(await post(form.dataset.url, body));
      } catch (err) {
        error.textContent = err.message;  // textContent: a server string never becomes markup
        error.hidden = false;
      } finally {
        button.disabled = false;
      }
    });
  }

  document.querySelectorAll("button.slide-infer").forEach((button) => {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        follow(await post(button.dataset.url));
      } catch (err) {
        card.hidden = false;
        field("error").hidden = false;
        field("error").textContent = err.message;
      } finally {
        button.disabled = false;
      }
    });
  });
})();
