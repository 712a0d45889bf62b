// The job page and the project page: follow every job card the server drew with its data-job-url.
import { api } from "./api.js";
import { watchJob } from "./job_progress.js";
import { reloadKeepingFocus } from "./reload.js";

document.querySelectorAll("[data-job-url]").forEach(watchJob);

// The job page opened while its job ran: once it has succeeded with files to offer, load the page again so
// that it lists them (the server draws the links).
const page = document.getElementById("job");
if (page && !["succeeded", "failed", "cancelled"].includes(page.dataset.state)) {
  page.addEventListener("job-update", (event) => {
    const job = event.detail;
    if (job.state === "succeeded" && ((job.result || {}).files || []).length) reloadKeepingFocus();
  });
}

// Cancel, where the server drew the button (the user may cancel this job and it has not ended): the worker
// stops at its next check; the card's state says when it has.
const cancelButton = document.getElementById("cancel-job");
if (cancelButton && page) {
  const status = document.getElementById("cancel-status");
  cancelButton.addEventListener("click", async () => {
    if (!window.confirm(cancelButton.dataset.question)) return;
    cancelButton.disabled = true;
    try {
      await api(cancelButton.dataset.cancelUrl, { method: "POST" });
      status.textContent = "Cancel requested: the job stops at its next check.";
    } catch (err) {
      // 409 with the job's state: it ended before the cancel reached it (the card catches up at its next look).
      if (err.status === 409 && err.data && err.data.state) {
        cancelButton.remove();
        status.textContent = `Not cancelled: the job had already ${err.data.state}.`;
        return;
      }
      cancelButton.disabled = false;
      status.textContent = `Not cancelled: ${err.message}`;
    }
  });
  page.addEventListener("job-update", (event) => {
    if (!["succeeded", "failed", "cancelled"].includes(event.detail.state)) return;
    cancelButton.remove();
    if (event.detail.state !== "cancelled" && status.textContent.startsWith("Cancel requested")) {
      status.textContent = `The job had ${event.detail.state} before the cancel reached it.`;
    }
  });
}
