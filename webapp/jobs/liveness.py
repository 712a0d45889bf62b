"""Which running jobs are still held by a live worker, asked of the workers themselves.

A job is never judged by its worker's name: a worker restarted under the same name (the same host, the same
container) would look alive although the task it ran died with the old process. Instead every live worker is
asked whether it holds the job's task (executing or reserved), and a job counts as lost only when none does
and the job has not reported for a while.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

# A job with a live worker reports progress at least every few seconds; a job silent for this long, and held
# by no worker, was lost with its worker.
LOST_AFTER = timedelta(seconds=30)
# A cancel ends a job at once when no worker holds it and it has been silent this long: a job that reported
# a moment ago is being worked on (possibly outside a worker, as an import run by a test or a command),
# and takes the cancel at its next batch.
CANCEL_AFTER = timedelta(seconds=10)
REPLY_TIMEOUT_S = 2.0


def silent_for(job, duration: timedelta) -> bool:
    return job.heartbeat_at is None or job.heartbeat_at < timezone.now() - duration


def held_task_ids(task_ids: list[str], timeout: float = REPLY_TIMEOUT_S) -> set[str] | None:
    """The ids among ``task_ids`` that a live worker executes or holds reserved.

    None when the workers could not be asked (the broker is down): then nothing can be concluded.
    """
    from workers.celery import app

    if not task_ids:
        return set()
    try:
        replies = app.control.inspect(timeout=timeout).query_task(*task_ids) or {}
    except Exception:  # kombu raises OperationalError and socket errors alike
        return None
    return {task_id for tasks in replies.values() for task_id in (tasks or {})}


def unheld_task_ids(task_ids: list[str]) -> set[str]:
    """The ids that no live worker holds, asked twice: a worker whose reply came late (a busy machine) is
    not taken for a dead one. Empty when the workers cannot be asked."""
    missing = set(task_ids)
    for _ in range(2):
        held = held_task_ids(sorted(missing))
        if held is None:
            return set()
        missing -= held
        if not missing:
            break
    return missing
