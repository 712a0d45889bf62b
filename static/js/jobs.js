// The job page and the project page: follow every job card the server drew with its data-job-url.
import { watchJob } from "./job_progress.js";

document.querySelectorAll("[data-job-url]").forEach(watchJob);

// The job page opened while its job ran: once it has succeeded with files to offer, load the page again so
// that it lists them (the server draws the links).
const page = document.getElementById("job");
if (page && !["succeeded", "failed", "cancelled"].includes(page.dataset.state)) {
  page.addEventListener("job-update", (event) => {
    const job = event.detail;
    if (job.state === "succeeded" && ((job.result || {}).files || []).length) window.location.reload();
  });
}
