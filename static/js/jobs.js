// The job page and the project page: follow every job card the server drew with its data-job-url.
import { watchJob } from "./job_progress.js";

document.querySelectorAll("[data-job-url]").forEach(watchJob);
