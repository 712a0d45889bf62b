// The project page's training section: start/cancel training, rollback, policy, inference.
(function () {
  "use strict";
  const section = document.getElementById("training");
  if (!section) return;
  const projectId = section.dataset.projectId;
  const csrf = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] || "";

  async function api(method, url, body) {
    const options = { method, credentials: "same-origin", headers: { "X-CSRFToken": csrf, Accept: "application/json" } };
    if (body instanceof FormData) options.body = body;
    else if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
    const response = await fetch(url, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || `HTTP ${response.status}`);
    return data;
  }

  function showError(id, err) { const el = document.getElementById(id); el.hidden = false; el.textContent = err.message; }

  const jobBox = document.getElementById("training-job");
  function follow(url) {
    jobBox.hidden = false;
    jobBox.dataset.jobUrl = url;
    jobBox.addEventListener("job-update", (event) => {
      if (["succeeded", "failed", "cancelled"].includes(event.detail.state)) setTimeout(() => location.reload(), 1500);
    });
    window.watchJob(jobBox);
  }
  if (jobBox && jobBox.dataset.jobUrl) follow(jobBox.dataset.jobUrl);

  const trainForm = document.getElementById("train-form");
  trainForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(trainForm);
    const body = { stages: form.getAll("stages"), epochs: Number(form.get("epochs")), backbone: form.get("backbone"),
                   device: form.get("device") };
    try { const job = await api("POST", `/api/projects/${projectId}/train/`, body); follow(job.url); }
    catch (err) { showError("train-error", err); }
  });

  document.getElementById("cancel-training")?.addEventListener("click", async () => {
    await api("POST", `${jobBox.dataset.jobUrl}cancel/`).catch((err) => alert(err.message));
  });

  document.querySelectorAll(".activate-version").forEach((button) => button.addEventListener("click", async () => {
    try { await api("POST", `/api/projects/${projectId}/versions/${button.dataset.number}/activate/`); location.reload(); }
    catch (err) { alert(err.message); }
  }));

  const policyForm = document.getElementById("policy-form");
  policyForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(policyForm);
    const body = { enabled: form.get("enabled") === "on", cron: form.get("cron") || "",
                   min_new_reviews: form.get("min_new_reviews") ? Number(form.get("min_new_reviews")) : null,
                   check_every_minutes: Number(form.get("check_every_minutes") || 15) };
    const status = document.getElementById("policy-status");
    try { await api("PUT", `/api/projects/${projectId}/retrain-policy/`, body); status.textContent = "Saved."; }
    catch (err) { status.textContent = err.message; }
  });

  const inferForm = document.getElementById("infer-form");
  inferForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = document.getElementById("infer-result");
    try {
      const job = await api("POST", `/api/projects/${projectId}/infer/`, new FormData(inferForm));
      box.hidden = false;
      box.dataset.jobUrl = job.url;
      box.addEventListener("job-update", (e) => {
        if (e.detail.state !== "succeeded") return;
        const { el, replace } = window.dom;
        replace(box.querySelector(".overlays"), ...e.detail.result.files.map((file) => {
          const name = file.split("/").pop();
          const link = `/api/jobs/${e.detail.id}/files/${encodeURIComponent(name)}`;
          const preview = name.endsWith(".png")
            ? [el("img", { src: link, alt: name, className: "overlay-image" }), el("br")] : [];
          return el("div", {}, ...preview, el("a", { href: link }, name));
        }));
      });
      window.watchJob(box);
    } catch (err) { showError("infer-error", err); }
  });
})();
