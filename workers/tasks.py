"""Celery tasks. Each one is glue: load the job, call domain functions and mlcore, report."""

from __future__ import annotations

import logging
import traceback

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections

from mlcore.types import Cancelled
from webapp.core import disk_space, media
from webapp.core.job_time_limits import describe_seconds
from webapp.jobs import operations
from webapp.jobs.models import Job

from .handlers import HANDLERS, JobContext, user_facing_errors

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # a job re-delivered after a lost worker runs at most once more


class JobTask(Task):
    """run_job's class: a job whose process the pool killed at its hard time limit ends as failed at once
    (the reaper would find it too, but a minute later and with a vaguer message)."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Celery calls this in the worker's main process after the pool killed the task at its hard limit
        # (the soft limit is an exception inside the task: run_job handles it itself).
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        close_old_connections()  # a thread of the main process: its connection may have gone stale
        try:
            operations.do_fail_job(args[0], time_limit_error(args[0], limit_s=getattr(exc, "args", [None])[0],
                                                             hard=True))
        except Exception:
            logger.exception("job %s: could not record its hard time limit (the reaper will end it)", args[0])


@shared_task(bind=True, base=JobTask, acks_late=True, reject_on_worker_lost=True, name=operations.RUN_JOB_TASK)
def run_job(self, job_id: int) -> str:
    try:
        return _run_job(self, job_id)
    except SoftTimeLimitExceeded:
        # Reached outside the handler (while the job was started or its end recorded).
        operations.do_fail_job(job_id, time_limit_error(job_id, limit_s=_soft_limit(self)))
        return "failed"
    finally:
        _trim_mirror()


def _trim_mirror() -> None:
    """With STORAGE_URL: this host's mirror loses what no row or running job names any more (deleted datasets
    and projects, what killed jobs left: webapp.jobs.sweep.sweep_mirror), and keeps the rest only up to
    MEDIA_MIRROR_MAX_BYTES (webapp.core.media.trim_mirror); a failure here never fails the job."""
    from webapp.jobs.sweep import sweep_mirror

    try:
        sweep_mirror()
        media.trim_mirror()
    except Exception:
        logger.exception("could not sweep or trim the media mirror")


def _run_job(task, job_id: int) -> str:
    try:
        job = Job.objects.get(pk=job_id)
    except Job.DoesNotExist:
        logger.warning("job %s does not exist (deleted before it ran)", job_id)
        return "missing"
    if job.state == Job.State.RUNNING and job.attempts >= MAX_ATTEMPTS:
        operations.do_fail_job(job_id, f"the worker running this job was lost {job.attempts} times; giving up")
        return "failed"
    try:
        job = operations.do_start_job(job_id, worker=task.request.hostname or "worker")
    except operations.JobNotRunnable as exc:
        logger.info("%s", exc)
        return "skipped"
    context = JobContext(job)
    try:
        with media.mirror_in_use():   # no trim removes this job's files while it runs
            result = HANDLERS[job.kind](context)
    except Cancelled:
        operations.do_mark_cancelled(job_id)
        return "cancelled"
    except Exception as exc:
        if _caused_by(exc, SoftTimeLimitExceeded):
            logger.warning("job %s: stopped at its soft time limit", job_id)
            operations.do_fail_job(job_id, time_limit_error(job_id, limit_s=_soft_limit(task)))
            return "failed"
        # The disk filled as the job wrote (an import's files, a training's checkpoint): what the user can act on,
        # not "OSError: [Errno 28]" and a file name.
        try:
            exc = disk_space.disk_error(exc, media.root()) or exc
        except OSError:   # the free space could not be read either: the error as it was
            logger.exception("job %s: could not read the free disk space", job_id)
        if isinstance(exc, user_facing_errors()):
            # The user's input (a bad upload, an unreadable slide): one line, as the job shows it; a
            # traceback per bad file would bury the worker's real errors.
            logger.warning("job %s failed: %s", job_id, exc)
        else:
            logger.exception("job %s failed", job_id)
        operations.do_fail_job(job_id, _error_text(exc))
        return "failed"
    operations.do_finish_job(job_id, result)
    return "succeeded"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is ``kind`` or was raised while handling one (a handler may wrap what it caught)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _soft_limit(task) -> float | None:
    """The soft limit this run got with its message (Celery's ``timelimit`` header: hard, soft)."""
    limits = getattr(task.request, "timelimit", None) or (None, None)
    return limits[1]


def time_limit_error(job_id: int, *, limit_s: float | None, hard: bool = False) -> str:
    """What the job's owner reads when a time limit stopped it."""
    job = Job.objects.filter(pk=job_id).first()
    kind = job.kind if job else ""
    label = Job.Kind(kind).label if kind in Job.Kind.values else "The job"
    if limit_s is None and kind in settings.JOB_TIME_LIMITS:
        limit_s = settings.JOB_TIME_LIMITS[kind][1 if hard else 0]
    limit = f" of {describe_seconds(limit_s)}" if limit_s else ""
    how = "its worker process was killed" if hard else "it was stopped"
    return (f"{label} ran past its time limit{limit} and {how}; its unfinished output was removed. "
            f"An administrator can raise the limit for {kind or 'this kind of'} jobs with JOB_TIME_LIMITS, set "
            "alike on the web server, beat and the workers (a job's limit is the one where it was queued).")


def _storage_failure(exc: BaseException) -> BaseException | None:
    """The object storage's error behind ``exc`` (botocore's, raised or wrapped), if any."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:   # the local file storage only: no store to fail
        return None
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (BotoCoreError, ClientError)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _error_text(exc: Exception) -> str:
    if isinstance(exc, user_facing_errors()):
        return str(exc)
    # Every member of the project reads a job's error: the store's address and the storage keys in botocore's
    # message stay in the worker's log.
    storage = _storage_failure(exc)
    if storage is not None:
        return (f"The object storage could not be used ({type(storage).__name__}; the worker's log has the "
                "details). Check STORAGE_URL on the host of the worker that ran this job: the store must be "
                "reachable from it, with the same bucket and keys as the web server's.")
    # A person reads this: the message first, the innermost frame for whoever debugs it.
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {frame[0].filename.rsplit('/', 1)[-1]}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


@shared_task(name="workers.tasks.reap_lost_jobs", ignore_result=True)
def reap_lost_jobs() -> int:
    """Periodic (beat): end the running jobs that no live worker holds any more."""
    return len(operations.do_reap_lost_jobs())


@shared_task(name="workers.tasks.sweep_orphan_files", ignore_result=True)
def sweep_orphan_files() -> int:
    """Periodic (beat): remove the folders that killed jobs left behind; on SQLite, give the database's free
    pages back to the disk when they are a large share of it (webapp.core.sqlite_space)."""
    from webapp.core.sqlite_space import reclaim_free_pages
    from webapp.jobs.sweep import sweep_orphans

    removed = len(sweep_orphans())
    reclaim_free_pages()
    return removed


@shared_task(name="workers.tasks.check_retrain")
def check_retrain(project_id: int) -> int | None:
    """Periodic (django-celery-beat): retrain when enough new reviewed labels exist."""
    from webapp.projects.models import Project
    from webapp.training.operations import maybe_retrain

    project = Project.objects.filter(pk=project_id).first()
    job = maybe_retrain(project, reason="threshold") if project else None
    return job.pk if job else None


@shared_task(name="workers.tasks.scheduled_retrain")
def scheduled_retrain(project_id: int) -> int | None:
    """Cron schedule (django-celery-beat): retrain unless a training is queued or running."""
    from webapp.projects.models import Project
    from webapp.training.operations import maybe_retrain

    project = Project.objects.filter(pk=project_id).first()
    job = maybe_retrain(project, reason="schedule") if project else None
    return job.pk if job else None
