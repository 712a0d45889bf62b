"""What each kind of job does. A handler takes a JobContext and returns the job's result dict."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

from webapp.jobs import operations
from webapp.jobs.models import Job


class JobCancelled(Exception):
    """Raised inside a handler when the user cancelled the job; nothing is published."""


class JobContext:
    """What a handler may do with its job: report progress, log, and check for a cancel."""

    def __init__(self, job: Job, min_interval_s: float = 0.5):
        self.job = job
        self._last_report = 0.0
        self._min_interval_s = min_interval_s
        self.cancel_requested = False

    def progress(self, percent: float, force: bool = False, log: str | None = None, **details) -> None:
        now = time.monotonic()
        if not force and log is None and now - self._last_report < self._min_interval_s:
            return  # progress callbacks can fire per batch: do not write a row per batch
        self._last_report = now
        payload = {"percent": round(float(percent), 1), **details}
        self.cancel_requested = operations.do_report_progress(self.job.pk, payload, log_line=log)

    def check_cancel(self) -> None:
        if self.cancel_requested or Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
            raise JobCancelled()


def run_diagnostics(context: JobContext) -> dict:
    """Report what the worker sees: proof that the queue, the worker and the database connect."""
    import numpy
    import torch

    context.progress(10, force=True, log="checking the compute environment")
    cuda = torch.cuda.is_available()
    result = {
        "worker_pid": os.getpid(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    context.progress(100, force=True, log="done")
    return result


def run_import(context: JobContext) -> dict:
    from webapp.datasets.uploads import run_import_job

    def progress(percent: float, message: str) -> None:
        context.progress(percent, message=message)
        context.check_cancel()

    return run_import_job(context.job, progress)


HANDLERS: dict[str, Callable[[JobContext], dict]] = {
    Job.Kind.DIAGNOSTICS: run_diagnostics,
    Job.Kind.IMPORT: run_import,
}


def user_facing_errors() -> tuple[type[Exception], ...]:
    """Errors about the user's input: their message is the whole story, no code location needed."""
    from webapp.datasets.uploads import USER_ERRORS

    return USER_ERRORS
