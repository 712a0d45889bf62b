// Whole-slide images on the project page: register one by its path under SLIDES_ROOT, upload one in resumable
// chunks, or classify one with the active model; both post to the API and follow the job live
// (job_progress.js), as the dataset upload does.
import { api, ApiError } from "./api.js";
import { setPercent } from "./dom.js";
import { clearFieldErrors, showFieldErrors } from "./field_errors.js";
import { watchJob } from "./job_progress.js";
import { reloadKeepingFocus } from "./reload.js";

function slidesSection(card) {
  const form = document.getElementById("slide-form");
  const field = (name) => card.querySelector(`[data-field="${name}"]`);
  let following = null;
  // The localStorage keys of the uploads each registration took (job id: keys), forgotten once its import
  // succeeded. An import that fails or is cancelled gives its uploads back under the same ids: choosing the same
  // file again then registers it without sending it again.
  const uploadKeys = new Map();

  // Start a job; its answer's job, to follow.
  const post = async (url, body) => (await api(url, { method: "POST", body })).job;

  function follow(job) {
    card.hidden = false;
    card.dataset.jobUrl = job.url;
    field("error").hidden = true;
    field("done").hidden = true;
    following = job.id;
    watchJob(card);
  }

  card.addEventListener("job-update", (e) => {
    const job = e.detail;
    if (job.state !== "succeeded" || !job.result) return;
    for (const key of uploadKeys.get(job.id) || []) localStorage.removeItem(key);
    uploadKeys.delete(job.id);
    const r = job.result;
    const done = field("done");
    done.hidden = false;
    done.textContent = r.predictions != null
      ? `Classified ${r.nuclei} nuclei (${r.nuclei_per_s} nuclei/s).`
      : `Registered ${r.dataset}: ${r.nuclei} nuclei.`;
    if (following === job.id) {
      following = null;
      if (form) form.reset();
      if (uploadForm) uploadForm.reset();
      done.append(" · refreshing the page…");
      setTimeout(() => reloadKeepingFocus(`${location.pathname}?slide_job=${job.id}#slides`), 800);
    }
  });

  // A refusal: beside the fields it names (field_errors.js, which focuses the first), the rest in the form's alert
  // with the focus back on the button, which was disabled while it sent and had dropped the focus to the page.
  function showRefusal(someForm, err, button, aliases) {
    const error = someForm.querySelector('[data-role="error"]');
    const rest = err instanceof ApiError ? showFieldErrors(someForm, err, { aliases }) : null;
    if (rest === null) button.focus();
    if (rest === "") return;
    error.textContent = rest || err.message;  // textContent: a server string never becomes markup
    error.hidden = false;
  }

  if (form) {
    const error = form.querySelector('[data-role="error"]');
    const button = form.querySelector('button[type="submit"]');
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      clearFieldErrors(form);
      const body = {};
      for (const name of ["name", "path", "detections_path", "label_set"]) {
        if (form.elements[name].value) body[name] = form.elements[name].value;
      }
      button.disabled = true;
      try {
        follow(await post(form.dataset.url, body));
        button.disabled = false;
        button.focus();
      } catch (err) {
        button.disabled = false;
        showRefusal(form, err, button);
      }
    });
  }

  // Upload a slide and its detections in chunks (PUT with Content-Range), then register them. The upload
  // ids are kept in localStorage under the file's name, size and date, so that choosing the same file again
  // (after a lost connection, a reload, or an import that failed and gave the uploads back) carries on from
  // the bytes the server has (GET offset; all of them: nothing is sent again).
  const uploadForm = document.getElementById("slide-upload-form");
  if (uploadForm) {
    const error = uploadForm.querySelector('[data-role="error"]');
    const button = uploadForm.querySelector('button[type="submit"]');
    const box = uploadForm.querySelector('[data-role="uploads"]');
    const bar = uploadForm.querySelector('[data-role="bar"]');
    const fileName = uploadForm.querySelector('[data-role="file-name"]');
    const fileState = uploadForm.querySelector('[data-role="file-state"]');
    const RETRIES = 5;
    const storageKey = (file) => `slide-upload:${file.name}:${file.size}:${file.lastModified}`;
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

    function show(file, offset, words) {
      const percent = file.size ? (100 * offset) / file.size : 100;
      fileName.textContent = file.name;
      fileState.textContent = words || `${(offset / 1048576).toFixed(1)} of ${(file.size / 1048576).toFixed(1)} MB`;
      bar.dataset.percent = String(percent);
      setPercent(bar, percent, `${file.name}: ${fileState.textContent} (${Math.round(percent)}%)`);
    }

    // The upload of this file that the server still has, or a new one: {url, offset}.
    async function resumeOrStart(file) {
      const key = storageKey(file);
      const known = JSON.parse(localStorage.getItem(key) || "null");
      if (known && known.url) {
        let upload = null;
        try {
          upload = await api(known.url);
        } catch (err) {
          if (!err.status) throw err;  // no answer: the upload may well be there, choose the file again later
        }
        if (upload && upload.size === file.size) return { id: upload.id, url: known.url, offset: upload.offset };
        localStorage.removeItem(key);  // finished, removed or abandoned: start again
      }
      const payload = await api(uploadForm.dataset.startUrl, { method: "POST", body: { filename: file.name, size: file.size } });
      localStorage.setItem(key, JSON.stringify({ id: payload.id, url: payload.url }));
      return { id: payload.id, url: payload.url, offset: payload.offset };
    }

    // The file being sent ("slide" or "detections"): a refusal of its upload (its `filename`, `size`,
    // `Content-Range`) is shown beside it.
    let sending = null;

    async function upload(file, field) {
      sending = field;
      const chunkBytes = Math.max(1, Number(uploadForm.dataset.chunkBytes) || 16777216);
      const state = await resumeOrStart(file);
      let offset = state.offset;
      let failures = 0;
      show(file, offset);
      while (offset < file.size) {
        const end = Math.min(offset + chunkBytes, file.size);
        // Each chunk's retries are this loop's (below): it asks the server how far it got before sending again.
        let refusal = null;
        try {
          const answer = await api(state.url, {
            method: "PUT", body: file.slice(offset, end),
            headers: { "Content-Type": "application/octet-stream", "Content-Range": `bytes ${offset}-${end - 1}/${file.size}` },
          });
          offset = answer.offset;
          failures = 0;
        } catch (err) {
          if (!(err instanceof ApiError)) throw err;
          refusal = err;  // status 0: the network failed
        }
        if (refusal && refusal.status === 409 && typeof (refusal.data || {}).offset === "number") {
          offset = refusal.data.offset;  // the server has more (or less) than we thought: carry on from there
        } else if (refusal && refusal.status && refusal.status < 500 && refusal.status !== 408) {
          throw refusal;  // its message: the server's detail
        } else if (refusal) {
          failures += 1;
          if (failures > RETRIES) throw new Error(`${file.name}: the upload failed ${failures} times in a row; choose the file again to resume`);
          show(file, offset, `retrying (${failures} of ${RETRIES})…`);
          await sleep(500 * 2 ** (failures - 1));
          const probe = await api(state.url, { retries: 0 }).catch(() => null);
          if (probe) offset = probe.offset;
        }
        show(file, offset);
      }
      show(file, file.size, "uploaded");
      sending = null;
      return state.id;
    }

    uploadForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const slide = uploadForm.elements.slide.files[0];
      const detections = uploadForm.elements.detections.files[0];
      if (!slide || !detections) return;
      clearFieldErrors(uploadForm);
      button.disabled = true;
      box.hidden = false;
      try {
        const body = { name: uploadForm.elements.name.value };
        if (uploadForm.elements.label_set.value) body.label_set = uploadForm.elements.label_set.value;
        body.slide_upload_id = await upload(slide, "slide");
        body.detections_upload_id = await upload(detections, "detections");
        const job = await post(uploadForm.dataset.registerUrl, body);
        // Registered: the server moved both files into the import. They are forgotten here once it succeeded
        // (a failed one gives them back; a reload meanwhile finds them gone, 404, or given back).
        uploadKeys.set(job.id, [storageKey(slide), storageKey(detections)]);
        follow(job);
        button.disabled = false;
        button.focus();
      } catch (err) {
        button.disabled = false;
        // The registration names the files by their upload ids; a file's own upload by its name or size.
        const aliases = { slide_upload_id: "slide", detections_upload_id: "detections" };
        if (sending) Object.assign(aliases, { filename: sending, size: sending, "Content-Range": sending });
        sending = null;
        showRefusal(uploadForm, err, button, aliases);
      }
    });
  }

  document.querySelectorAll("button.slide-infer").forEach((button) => {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        follow(await post(button.dataset.url, { tta: Boolean(document.getElementById("slide-tta")?.checked) }));
      } catch (err) {
        card.hidden = false;
        field("error").hidden = false;
        field("error").textContent = err.message;
      } finally {
        button.disabled = false;
      }
    });
  });
}

const slideJob = document.getElementById("slide-job");
if (slideJob) slidesSection(slideJob);
