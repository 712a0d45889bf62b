"""Every state change of a Job goes through these functions (each writes its audit row).

The web layer calls :func:`do_enqueue_job`; workers call :func:`do_start_job`,
:func:`do_report_progress` and :func:`do_finish_job` / :func:`do_fail_job` / :func:`do_cancel_job`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from webapp.core import audit
from webapp.core.domain_errors import Conflict, Unavailable

from . import liveness, sweep
from .errors import public_error
from .models import Job

logger = logging.getLogger(__name__)
LOG_TAIL_LINES = 40


class JobNotRunnable(Exception):
    """The job was cancelled or finished before a worker picked it up."""


def broker_reachable(timeout: float = 2.0) -> bool:
    from workers.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # kombu raises OperationalError and socket errors alike
        return False


def do_enqueue_job(kind: str, *, actor=None, params: dict | None = None, **fields) -> Job:
    """Create the job row and hand it to Celery once the row is committed.

    Raises Unavailable (503 in the API) when Redis is down. Sending happens on commit so that a worker never
    receives a job whose row it cannot see yet (callers may wrap this in their own transaction).
    """
    if not broker_reachable():
        raise Unavailable("The task queue (Redis) is unreachable, so the job was not started. "
                          "Nothing was saved; try again once Redis is back.", code="queue_unavailable")
    with transaction.atomic():
        job = Job.objects.create(kind=kind, created_by=actor if getattr(actor, "is_authenticated", False) else None,
                                 params=params or {}, celery_task_id=str(uuid.uuid4()), **fields)
        # Why it started, where a job says (a training: manual, resume, or the retraining policy's threshold
        # or schedule; a prediction a training queued by itself, and which): the activity page tells a policy's
        # trainings and a training's predictions from a person's.
        why = {key: job.params[key] for key in ("reason", "started_by_job") if job.params.get(key)}
        audit.record("job.enqueued", actor=actor, target=job, kind=kind, **why)
        transaction.on_commit(lambda: _send(job))
    return job


# The worker's task, sent by its registered name: webapp.jobs sits below the workers and never imports them
# (tests/test_layering_imports.py). workers/tasks.py registers run_job under this same name.
RUN_JOB_TASK = "workers.tasks.run_job"


def _send(job: Job) -> None:
    from workers.celery import app

    try:
        # Each kind's own time limits (settings.JOB_TIME_LIMITS): a training may run a day, a diagnostics
        # job minutes; the soft limit ends the job as failed (workers.tasks.run_job).
        soft, hard = settings.JOB_TIME_LIMITS[job.kind]
        app.send_task(RUN_JOB_TASK, args=[job.pk], queue=job.queue, task_id=job.celery_task_id,
                      soft_time_limit=soft, time_limit=hard)
    except Exception as exc:
        do_fail_job(job.pk, f"could not queue the job: the task queue (Redis) is unreachable ({exc})")
        raise Unavailable("The task queue (Redis) became unreachable while the job was queued; "
                          f"job {job.pk} is marked failed. Try again once Redis is back.", code="queue_unavailable",
                          job_id=job.pk) from exc


def do_start_job(job_id: int, worker: str) -> Job:
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.finished:
            raise JobNotRunnable(f"job {job_id} is already {job.state}")
        if job.cancel_requested:
            _finish(job, Job.State.CANCELLED)
            raise JobNotRunnable(f"job {job_id} was cancelled before it started")
        now = timezone.now()
        job.state = Job.State.RUNNING
        job.worker = worker
        job.attempts += 1
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.save(update_fields=["state", "worker", "attempts", "started_at", "heartbeat_at"])
        audit.record("job.started", target=job, kind=job.kind, worker=worker, attempt=job.attempts)
    return job


def progress_database() -> str:
    """The connection that job progress is written on: "default", except while the job holds a transaction
    open there (an import stores all its rows in one). Then a second connection to the same database
    (settings.PROGRESS_DATABASE), in autocommit: the progress is committed at once, the API and the pages
    see it, and the job's row is never locked by the long transaction, so a cancel need not wait for it.
    SQLite lets one connection write at a time, and the open transaction holds that lock: there the
    progress stays in the transaction (seen at its commit), as it must."""
    default = connections[DEFAULT_DB_ALIAS]
    alias = getattr(settings, "PROGRESS_DATABASE", None)
    if default.in_atomic_block and default.vendor != "sqlite" and alias in connections.settings:
        return alias
    return DEFAULT_DB_ALIAS


def with_line(log_tail: str | None, line: str) -> str:
    """A job's log tail with ``line`` added at its end, its oldest lines dropped past LOG_TAIL_LINES."""
    return "\n".join(((log_tail or "").splitlines() + [line])[-LOG_TAIL_LINES:])


def do_report_progress(job_id: int, progress: dict[str, Any], log_line: str | None = None) -> bool:
    """Store progress; returns True when a cancel was requested (the worker then stops).

    Progress is frequent, so it writes no audit row and touches only its own columns. It is committed at
    once even when the caller is inside a transaction (see :func:`progress_database`).
    """
    jobs = Job.objects.using(progress_database())
    fields: dict[str, Any] = {"progress": progress, "heartbeat_at": timezone.now()}
    if log_line:
        tail = jobs.filter(pk=job_id).values_list("log_tail", flat=True).first() or ""
        fields["log_tail"] = with_line(tail, log_line)
    jobs.filter(pk=job_id, state=Job.State.RUNNING).update(**fields)
    return jobs.filter(pk=job_id, cancel_requested=True).exists()


def do_finish_job(job_id: int, result: dict | None = None) -> Job:
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.finished:
            # Ended meanwhile (cancelled while its worker was taken for gone, failed by the reaper): its files may
            # be swept already, so it stays as it ended.
            return job
        job.result = result or {}
        job.progress = {**job.progress, "percent": 100.0}
        _finish(job, Job.State.SUCCEEDED)
    return job


def do_fail_job(job_id: int, error: str) -> Job:
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.finished:
            return job
        job.error = public_error(error)
        # Its log ends saying why (its last line was the step it was at); the whole error is the job's error.
        reason = job.error.splitlines()[0] if job.error else "no reason given"
        line = f"failed: {reason[:300]}{'…' if len(reason) > 300 else ''}"
        job.log_tail = with_line(job.log_tail, line)
        _finish(job, Job.State.FAILED)
    return job


def do_cancel_job(job: Job, *, actor=None) -> Job:
    """Ask a job to stop. A queued job is cancelled at once, and so is a running one whose worker is gone
    (nothing would ever act on the request); a running one with a live worker stops at its next batch.
    A job that has ended is a Conflict naming its state: a script heard 200 and could not tell that nothing
    was cancelled. Asking again while the first request is under way changes nothing and is no error."""
    worker_gone = (job.state == Job.State.RUNNING and liveness.silent_for(job, liveness.CANCEL_AFTER)
                   and job.celery_task_id in liveness.unheld_task_ids([job.celery_task_id]))
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.finished:
            raise Conflict(f"Job {job.pk} has already ended ({job.state}): there is nothing to cancel.",
                           code="job_ended", state=job.state)
        if job.cancel_requested and not worker_gone:
            return job   # asked before: one request, one activity row
        job.cancel_requested = True
        job.save(update_fields=["cancel_requested"])
        audit.record("job.cancel_requested", actor=actor, target=job, kind=job.kind)
        if job.state == Job.State.QUEUED or worker_gone:
            line = "cancelled before a worker took it" if job.state == Job.State.QUEUED else \
                "cancelled: no worker held it any more"
            job.log_tail = with_line(job.log_tail, line)
            _finish(job, Job.State.CANCELLED)
    return job


def do_reap_lost_jobs() -> list[Job]:
    """End the running jobs that no live worker holds and that stopped reporting (their worker was killed,
    ran out of memory or restarted): failed, or cancelled where a cancel was asked for. Returns them."""
    stale = list(Job.objects.filter(state=Job.State.RUNNING,
                                    heartbeat_at__lt=timezone.now() - liveness.LOST_AFTER))
    if not stale:
        return []
    lost_ids = liveness.unheld_task_ids([job.celery_task_id for job in stale])
    reaped = []
    for stale_job in stale:
        if stale_job.celery_task_id not in lost_ids:
            continue
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=stale_job.pk)
            if job.state != Job.State.RUNNING or job.heartbeat_at != stale_job.heartbeat_at:
                continue  # it finished or reported meanwhile
            percent = job.progress.get("percent")
            at = f" at {percent:.0f}%" if isinstance(percent, (int, float)) else ""
            _end_unfinished(job, f"The worker running this job stopped{at} (it was killed, ran out of memory or "
                                 "was restarted) and no worker holds the job any more.")
            audit.record("job.lost", target=job, kind=job.kind, worker=job.worker)
        reaped.append(job)
    return reaped


def _end_unfinished(job: Job, why: str) -> None:
    """End a job no worker will finish: cancelled where a cancel was asked for, else failed with ``why`` and what
    to do (a training that kept a checkpoint to resume from, its last finished epoch or stage, says so)."""
    if job.cancel_requested:
        _finish(job, Job.State.CANCELLED)
        return
    again = ("Resume it from the project page: it goes on from where it stopped." if (job.result or {}).get("resume")
             else "Start it again.")
    job.error = f"{why} {again}"
    _finish(job, Job.State.FAILED)


def do_end_jobs_interrupted_by_restore() -> list[Job]:
    """After ``manage.py restore``: the jobs that were queued or running when the backup was taken. No worker
    holds them (their messages were in the Redis of the installation backed up, and the reaper ends a running
    one only once it asks the workers), so each ends now: failed, saying why and what to do, or cancelled where
    a cancel was asked for. Returns them."""
    ended = []
    for job_id in Job.objects.exclude(state__in=Job.FINISHED_STATES).values_list("pk", flat=True):
        with transaction.atomic():
            job = Job.objects.select_for_update().get(pk=job_id)
            if job.finished:
                continue
            _end_unfinished(job, f"The installation was restored from a backup taken while this job was "
                                 f"{job.state}; it did not go on after the restore.")
            audit.record("job.ended_by_restore", target=job, kind=job.kind, worker=job.worker)
        ended.append(job)
    return ended


def do_mark_cancelled(job_id: int) -> Job:
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if not job.finished:
            # Its log ends saying so: the last line was whatever step it was at.
            percent = (job.progress or {}).get("percent")
            line = "cancelled" + (f" at {percent:.0f} %" if isinstance(percent, (int, float)) else "") + \
                ", as asked: nothing of the unfinished step is kept"
            job.log_tail = with_line(job.log_tail, line)
            _finish(job, Job.State.CANCELLED)
    return job


def _finish(job: Job, state: str) -> None:
    job.state = state
    job.finished_at = timezone.now()
    if state in (Job.State.FAILED, Job.State.CANCELLED):
        # What its owner may use again (a slide import's chunked uploads) goes back to them now, before the
        # inputs are removed below, and the job says so: in its error, or in its log when cancelled.
        notes = " ".join(sweep.give_back_inputs(job))
        if notes and state == Job.State.FAILED:
            error = (job.error or "").rstrip()
            job.error = f"{error}{'' if not error or error[-1] in '.!?' else '.'} {notes}".strip()
        elif notes:
            job.log_tail = with_line(job.log_tail, notes)
    job.save(update_fields=["state", "finished_at", "error", "result", "progress", "cancel_requested", "log_tail"])
    audit.record(f"job.{state}", target=job, kind=job.kind, error=job.error[:500] if job.error else "")
    if state in (Job.State.FAILED, Job.State.CANCELLED):
        # What it wrote and what it was sent are of no use now; after the commit, so a rollback keeps them.
        transaction.on_commit(lambda: sweep.remove_job_paths(job))
