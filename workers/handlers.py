"""What each kind of job does. A handler takes a JobContext and returns the job's result dict."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

from mlcore.types import Cancelled
from webapp.jobs import operations
from webapp.jobs.models import Job


class JobContext:
    """What a handler may do with its job: report progress, log, and check for a cancel."""

    def __init__(self, job: Job, min_interval_s: float = 0.5):
        self.job = job
        self._last_report = 0.0
        self._min_interval_s = min_interval_s
        self.cancel_requested = False
        self._last_cancel_check = 0.0

    def progress(self, percent: float, force: bool = False, log: str | None = None, **details) -> None:
        now = time.monotonic()
        if not force and log is None and now - self._last_report < self._min_interval_s:
            return  # progress callbacks can fire per batch: do not write a row per batch
        self._last_report = now
        payload = {"percent": round(float(percent), 1), **{k: _json_number(v) for k, v in details.items()}}
        self.cancel_requested = operations.do_report_progress(self.job.pk, payload, log_line=log)

    def check_cancel(self) -> None:
        if self.stop_requested(at_once=True):
            raise Cancelled()

    def stop_requested(self, at_once: bool = False) -> bool:
        """Whether the job's cancel was asked for. The flag comes with each progress write; between writes (a
        step that reports nothing for a while: scoring, publishing, one image's inference) it is read here,
        at most every half second (``at_once``: now)."""
        if self.cancel_requested:
            return True
        now = time.monotonic()
        if at_once or now - self._last_cancel_check >= self._min_interval_s:
            self._last_cancel_check = now
            self.cancel_requested = Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists()
        return self.cancel_requested


def _json_number(value):
    """NaN and infinity are not JSON (an ETA before the first batch, a diverged loss): store null."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # NumPy and torch scalars
        return _json_number(value.item())
    return value


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

    last = {"percent": 0.0}

    def progress(percent: float, message: str) -> None:
        # Called per image: the progress write (at most every half second) also reads the cancel flag,
        # so no query of its own here.
        last["percent"] = percent
        context.progress(percent, message=message)
        if context.cancel_requested:
            raise Cancelled()

    def log(line: str) -> None:
        # A step worth keeping in the job's log (written at once, whatever the half-second limit).
        context.progress(last["percent"], message=line, log=line)
        if context.cancel_requested:
            raise Cancelled()

    result = run_import_job(context.job, progress, log)
    return {**result, **predict_imported_dataset(context, result["dataset_id"])}


def predict_imported_dataset(context: JobContext, dataset_id: int) -> dict:
    """The active version's predictions of the new nuclei, queued: {"prediction_job": id}, or {} where there is
    none to make. A queue that is down costs the predictions, not the import, which has committed (and so
    is not cancelled any more either)."""
    from webapp.core.domain_errors import Unavailable
    from webapp.datasets.models import Dataset
    from webapp.training.operations import do_predict_dataset

    def log(line: str) -> None:
        context.progress(100, message=line, log=line)

    try:
        job = do_predict_dataset(Dataset.objects.select_related("project").get(pk=dataset_id),
                                 queued_by=context.job)
    except Unavailable as exc:
        log(f"the predictions of the new nuclei were not queued: {exc.detail}")
        return {}
    if job is None:
        return {}
    log(f"the active model version's predictions of the new nuclei follow in job {job.pk}")
    return {"prediction_job": job.pk}


def run_deletion(context: JobContext) -> dict:
    from webapp.projects.deletion import run_deletion_job

    def progress(percent: float, message: str) -> None:
        # The deletion is one transaction: a cancel here rolls it back whole.
        context.progress(percent, message=message)
        if context.cancel_requested:
            raise Cancelled()

    return run_deletion_job(context.job, progress)


def _run_training_kind(function_name: str):
    """Training, prediction and inference share the shape: report progress, stop when cancelled."""

    def handler(context: JobContext) -> dict:
        from webapp.training import runner

        def report(percent: float, log: str | None = None, **details) -> None:
            context.progress(percent, log=log, **{k: v for k, v in details.items() if v is not None})

        return getattr(runner, function_name)(context.job, report, context.stop_requested)

    handler.__name__ = function_name
    return handler


HANDLERS: dict[str, Callable[[JobContext], dict]] = {
    Job.Kind.DIAGNOSTICS: run_diagnostics,
    Job.Kind.IMPORT: run_import,
    Job.Kind.TRAIN: _run_training_kind("run_training"),
    Job.Kind.PREDICT: _run_training_kind("run_prediction"),
    Job.Kind.INFER: _run_training_kind("run_inference"),
    Job.Kind.DELETE: run_deletion,
}


def user_facing_errors() -> tuple[type[Exception], ...]:
    """Errors about the user's input: their message is the whole story, no code location needed."""
    from mlcore.slides import SlideError
    from mlcore.types import DeviceUnavailable, TrainingDiverged
    from webapp.core.disk_space import NotEnoughDiskSpace
    from webapp.datasets.uploads import USER_ERRORS
    from webapp.jobs.deletion import DeletionRefused
    from webapp.training.operations import NotResumable

    return (*USER_ERRORS, DeletionRefused, SlideError, NotResumable, TrainingDiverged, DeviceUnavailable,
            NotEnoughDiskSpace)
