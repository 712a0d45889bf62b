// The project page's training section: start/cancel training, rollback, policy, inference.
import { api } from "./api.js";
import { el, replace } from "./dom.js";
import { clearFieldErrors, showFieldErrors } from "./field_errors.js";
import { watchJob } from "./job_progress.js";
import { reloadKeepingFocus } from "./reload.js";

function trainingSection(section) {
  const projectId = section.dataset.projectId;
  const post = (url, body) => api(url, { method: "POST", body });

  // The box has role="alert": shown, it is read out. ``focus``: the control to give the focus back to (a button
  // disabled while its request ran lost it to the page).
  function showError(id, message, focus) {
    const box = document.getElementById(id);
    box.hidden = false;
    box.textContent = message;
    focus?.focus();
  }

  const jobBox = document.getElementById("training-job");
  const startButton = document.querySelector("#train-form button[type=submit]");
  // Start is marked aria-disabled, never disabled: it keeps the focus (a disabled button dropped it to the page)
  // and stays reachable by Tab with its reason beside it (#train-busy, #train-not-ready: its description).
  const busyBox = document.getElementById("train-busy");
  const startRefused = () => startButton?.getAttribute("aria-disabled") === "true";
  function setStartRefused(refused) {
    if (!startButton) return;
    if (refused) startButton.setAttribute("aria-disabled", "true"); else startButton.removeAttribute("aria-disabled");
  }
  // ``jobId``: a training started from this page (the server wrote the sentence for one it found running).
  function showBusy(jobId) {
    if (!busyBox || jobId == null) return;
    busyBox.textContent = `Training job #${jobId} is under way: one training at a time. `
      + "Start can be pressed again once it has ended.";
    busyBox.hidden = false;
  }
  // ``focus``: the job was started from this page, by a button now refused (Start) or hidden (Resume): the focus
  // goes to the job's card, its state and progress, instead of dropping to the page.
  function follow(url, { focus = false, jobId = null } = {}) {
    jobBox.hidden = false;
    jobBox.dataset.jobUrl = url;
    setStartRefused(true);   // one training at a time (the server refuses a second)
    showBusy(jobId);
    if (focus) jobBox.focus();
    jobBox.addEventListener("job-update", (event) => {
      if (!["succeeded", "failed", "cancelled"].includes(event.detail.state)) return;
      const cancelButton = document.getElementById("cancel-training");
      if (cancelButton && cancelButton === document.activeElement) jobBox.focus();   // not to the page as it goes
      cancelButton?.remove();
      // The page again, with the new version, the job in Recent jobs and Start enabled.
      setTimeout(() => reloadKeepingFocus(), 1500);
    });
    watchJob(jobBox);
  }
  // A message the page leaves itself for after a reload (a version made active).
  const FLASH_KEY = `training-flash-${projectId}`;
  const flash = sessionStorage.getItem(FLASH_KEY);
  if (flash) {
    sessionStorage.removeItem(FLASH_KEY);
    document.querySelector("main")?.prepend(el("p", { className: "flash success", role: "status" }, flash));
  }
  if (jobBox && jobBox.dataset.jobUrl) follow(jobBox.dataset.jobUrl);

  // Start is refused while an import into the project runs (the server refuses it then): the page follows
  // that import and loads itself again once it has ended, with the new data's defaults. An import started
  // from this page is followed by upload.js instead, which reloads the page on success.
  const notReady = document.getElementById("train-not-ready");
  async function waitForImport() {
    try {
      const job = await api(notReady.dataset.waitUrl);
      if (["succeeded", "failed", "cancelled"].includes(job.state)) { reloadKeepingFocus(); return; }
    } catch (err) { /* a network hiccup: look again */ }
    setTimeout(waitForImport, 2000);
  }
  // data-wait-url, not data-job-url: jobs.js draws every [data-job-url] element as a job card, and this
  // sentence has none of a card's fields (it threw "Cannot set properties of null").
  if (notReady?.dataset.waitUrl) waitForImport();

  const trainForm = document.getElementById("train-form");
  trainForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (startRefused()) return;   // its description says why (Enter in a field submits the form too)
    setStartRefused(true);   // at once: a second click must not send a second start
    document.getElementById("train-error").hidden = true;
    clearFieldErrors(trainForm);
    try {
      const job = await post(`/api/projects/${projectId}/train/`, trainOptions());
      follow(job.url, { focus: true, jobId: job.id });
    } catch (err) {
      setStartRefused(false);
      // An option the server refused is shown beside its field, which takes the focus (field_errors.js).
      const rest = showFieldErrors(trainForm, err);
      if (rest === null) showError("train-error", err.message, startButton);
      else if (rest) showError("train-error", rest);
    }
  });

  function trainOptions() {
    const form = new FormData(trainForm);
    const body = { stages: form.getAll("stages"), backbone: form.get("backbone"), device: form.get("device") };
    for (const name of ["epochs", "samples_per_epoch", "ensemble"]) if (form.get(name)) body[name] = Number(form.get(name));
    // 0 is sent too: it turns stain jitter off where the active version had it on.
    for (const name of ["stain_jitter", "grayscale"]) {
      if (form.get(name) !== null && form.get(name) !== "") body[name] = Number(form.get(name));
    }
    if (form.get("crop_context_view") !== null) body.crop_context_view = Number(form.get("crop_context_view"));
    if (trainForm.elements.predict_tta) body.predict_tta = trainForm.elements.predict_tta.checked;
    return body;
  }

  // "What these options do": shows or hides the fields' explanations (a screen reader hears each with its field).
  trainForm?.querySelectorAll("button[aria-controls]").forEach((button) => button.addEventListener("click", () => {
    const shown = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(shown));
    document.getElementById(button.getAttribute("aria-controls")).hidden = !shown;
  }));

  // The estimate follows the form: asked again (debounced) whenever a field changes.
  const estimateBox = document.getElementById("train-estimate");
  function duration(seconds) {
    if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
    const minutes = Math.round(seconds / 60);
    return minutes < 90 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }
  async function updateEstimate() {
    const body = trainOptions();
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(body)) {
      if (Array.isArray(value)) value.forEach((v) => query.append(key, v)); else if (value !== null && value !== "") query.set(key, value);
    }
    try {
      const e = await api(`/api/projects/${projectId}/train/estimate/?${query}`);
      const stages = Object.entries(e.per_stage).map(([stage, s]) => `${stage} ${duration(s)}`).join(" · ");
      estimateBox.textContent = `Estimated time: about ${duration(e.seconds)} (${stages}) for ${e.nuclei} nuclei, `
        + `${e.epochs} epochs of ${e.samples_per_epoch} draws${e.models > 1 ? `, ${e.models} models in turn` : ""}, at ${Math.round(e.speed.train_samples_per_s)} crops/s `
        + `in training: from ${e.speed.text}. Not counted: ${e.excludes}.`;
      estimateBox.dataset.seconds = e.seconds;
      estimateBox.dataset.source = e.speed.source;
    } catch (err) { estimateBox.textContent = `No estimate: ${err.message}`; }
  }
  let estimateTimer = null;
  if (trainForm && estimateBox) {
    trainForm.addEventListener("input", () => { clearTimeout(estimateTimer); estimateTimer = setTimeout(updateEstimate, 400); });
    updateEstimate();
  }

  // Cancelling throws away the work since the last kept checkpoint: ask first.
  document.getElementById("cancel-training")?.addEventListener("click", async () => {
    const id = (jobBox.dataset.jobUrl.match(/\/jobs\/(\d+)\//) || [])[1];
    const question = `Cancel training job${id ? " #" + id : ""}? The work since its last finished epoch is lost `
      + "(since its last finished stage when it trains several models averaged); it can be resumed from there "
      + "once it has finished one.";
    if (!window.confirm(question)) return;
    // A 409 with the job's state: it ended meanwhile, which its card shows at its next look.
    await post(`${jobBox.dataset.jobUrl}cancel/`).catch((err) => { if (!(err.status === 409 && err.data?.state)) alert(err.message); });
  });

  document.querySelectorAll(".resume-training").forEach((button) => button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const job = await post(`/api/projects/${projectId}/train/`, { resume_from: Number(button.dataset.jobId) });
      document.getElementById("resumable").hidden = true;
      follow(job.url, { focus: true, jobId: job.id });
    } catch (err) { button.disabled = false; showError("resume-error", err.message, button); }
  }));

  // Making another version active changes what every reviewer is served and what exports hold: ask first.
  document.querySelectorAll(".activate-version").forEach((button) => button.addEventListener("click", async () => {
    const number = button.dataset.number;
    const active = section.dataset.activeVersion;
    const question = `Make v${number} the active model${active ? ` instead of v${active}` : ""}? The review queues, `
      + `the gallery and new predictions use it from now on${active ? `; v${active} stays and can be made active again` : ""}.`;
    if (!window.confirm(question)) return;
    try {
      await post(`/api/projects/${projectId}/versions/${number}/activate/`);
      sessionStorage.setItem(FLASH_KEY, `Model v${number} is now active${active ? ` (was v${active})` : ""}.`);
      reloadKeepingFocus();
    } catch (err) { alert(err.message); }
  }));

  // The active version's predictions, queued again where its training could not queue them: making it active
  // again queues those of every dataset it has not classified.
  document.querySelectorAll(".queue-predictions").forEach((button) => button.addEventListener("click", async () => {
    const number = button.dataset.number;
    button.disabled = true;
    try {
      await post(`/api/projects/${projectId}/versions/${number}/activate/`);
      sessionStorage.setItem(FLASH_KEY, `v${number}'s predictions are queued.`);
      reloadKeepingFocus();
    } catch (err) { button.disabled = false; alert(err.message); }
  }));

  const policyForm = document.getElementById("policy-form");
  // A change after a save is not saved: "Saved." must not stay beside it (a value the browser refuses, such
  // as a check interval of 0, is never submitted, so the submit handler below would not say so).
  policyForm?.addEventListener("input", () => {
    const status = document.getElementById("policy-status");
    if (status.textContent === "Saved.") status.textContent = "Changed: not saved yet.";
  });
  policyForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(policyForm);
    // Stages and epochs are the form's; other training options set through the API are kept.
    const options = { ...JSON.parse(document.getElementById("policy-options")?.textContent || "{}") };
    options.stages = form.getAll("policy_stages");
    if (form.get("policy_epochs")) options.epochs = Number(form.get("policy_epochs")); else delete options.epochs;
    const body = { enabled: form.get("enabled") === "on", cron: form.get("cron") || "", options,
                   min_new_reviews: form.get("min_new_reviews") ? Number(form.get("min_new_reviews")) : null,
                   check_every_minutes: Number(form.get("check_every_minutes") || 15),
                   activate_only_if_not_lower: form.get("activate_only_if_not_lower") === "on" };
    const status = document.getElementById("policy-status");
    const cron = policyForm.querySelector("input[name=cron]");
    const cronError = document.getElementById("policy-cron-error");
    try {
      const policy = await api(`/api/projects/${projectId}/retrain-policy/`, { method: "PUT", body });
      cron.removeAttribute("aria-invalid");
      cronError.hidden = true;
      cron.value = policy.cron;
      policyForm.querySelector("input[name=enabled]").checked = policy.enabled;
      document.getElementById("policy-next").textContent = policy.schedule_text;
      document.getElementById("policy-options").textContent = JSON.stringify(policy.options || {});
      status.textContent = "Saved.";
    } catch (err) {
      const cronProblem = ((err.data && err.data.errors) || {}).cron;  // a validation error's messages by field
      if (cronProblem) {
        cron.setAttribute("aria-invalid", "true");
        cronError.hidden = false;
        cronError.textContent = `Cron schedule: ${[].concat(cronProblem).join(" ")}`;
        status.textContent = "Not saved: see the cron schedule.";
      } else status.textContent = `Not saved: ${err.message}`;
    }
  });

  const inferForm = document.getElementById("infer-form");
  const classifyButton = inferForm?.querySelector("button[type=submit]");
  inferForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = document.getElementById("infer-result");
    document.getElementById("infer-error").hidden = true;
    clearFieldErrors(inferForm);
    try {
      const body = new FormData(inferForm);
      // An unticked checkbox is not sent at all, which the API would read as "the default" (on).
      body.set("tta", inferForm.elements.tta.checked ? "true" : "false");
      const job = await post(`/api/projects/${projectId}/infer/`, body);
      box.hidden = false;
      box.dataset.jobUrl = job.url;
      box.addEventListener("job-update", (e) => {
        if (e.detail.state !== "succeeded") return;
        replace(box.querySelector(".overlays"), ...e.detail.result.files.map((file) => {
          const name = file.split("/").pop();
          const link = `/api/jobs/${e.detail.id}/files/${encodeURIComponent(name)}`;
          const preview = name.endsWith(".png")
            ? [el("img", { src: link, alt: name, className: "overlay-image" }), el("br")] : [];
          return el("div", {}, ...preview, el("a", { href: link }, name));
        }));
      });
      watchJob(box);
    } catch (err) {
      // The image or mask the server refused (a photograph sent as the mask...) beside its field, focused.
      const rest = showFieldErrors(inferForm, err);
      if (rest === null) showError("infer-error", err.message, classifyButton);
      else if (rest) showError("infer-error", rest);
    }
  });
}

const section = document.getElementById("training");
if (section) trainingSection(section);
