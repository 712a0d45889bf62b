"""Celery tasks. Each one is glue: load the job, call domain functions and mlcore, report."""

from __future__ import annotations

import logging
import traceback

from celery import shared_task

from webapp.jobs import operations
from webapp.jobs.models import Job

from .handlers import HANDLERS, JobCancelled, JobContext, user_facing_errors

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # a job re-delivered after a lost worker runs at most once more


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, name="workers.tasks.run_job")
def run_job(self, job_id: int) -> str:
    try:
        job = Job.objects.get(pk=job_id)
    except Job.DoesNotExist:
        logger.warning("job %s does not exist (deleted before it ran)", job_id)
        return "missing"
    if job.state == Job.State.RUNNING and job.attempts >= MAX_ATTEMPTS:
        operations.do_fail_job(job_id, f"the worker running this job was lost {job.attempts} times; giving up")
        return "failed"
    try:
        job = operations.do_start_job(job_id, worker=self.request.hostname or "worker")
    except operations.JobNotRunnable as exc:
        logger.info("%s", exc)
        return "skipped"
    context = JobContext(job)
    try:
        result = HANDLERS[job.kind](context)
    except JobCancelled:
        operations.do_mark_cancelled(job_id)
        return "cancelled"
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        operations.do_fail_job(job_id, _error_text(exc))
        return "failed"
    operations.do_finish_job(job_id, result)
    return "succeeded"


def _error_text(exc: Exception) -> str:
    if isinstance(exc, user_facing_errors()):
        return str(exc)
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
    """Periodic (beat): remove the folders that killed jobs left behind."""
    from webapp.jobs.sweep import sweep_orphans

    return len(sweep_orphans())


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
