"""Deleting a dataset or a whole project: asked for on a page or the API, carried out by a job.

The request (:func:`webapp.datasets.operations.do_request_dataset_deletion`,
:func:`webapp.projects.deletion.do_request_project_deletion`) checks who asks and that nothing in the
project is at work, writes its audit row and queues a ``delete`` job; the answer is 202 with the job.
The job (:func:`webapp.projects.deletion.run_deletion_job`) removes the rows in one transaction, so that a
failure or a cancel leaves everything as it was, and removes the files once that transaction is committed.
A worker killed between the commit and the file removal leaves folders that nothing refers to; the
periodic sweep (:mod:`webapp.jobs.sweep`) removes those.

Deleting must not break work in progress: while an import, training, prediction, inference, export or
another deletion of the project is queued or running, a deletion is refused (409) and, the other way
round, no import or training starts while a deletion of the project is pending. The job checks again
when it runs, since a job may have been queued in between.

This module holds what every deletion shares and what the apps that start jobs check (which jobs block
a deletion, the refusals, the queuing); the rows each deletion removes are deleted by the app above
that owns them (:mod:`webapp.datasets.deletion`, :mod:`webapp.projects.deletion`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db import transaction

from mlcore.types import quoted

from webapp.core import audit, media
from webapp.core.domain_errors import Conflict, NotFound
from webapp.projects.models import Project

from . import operations as job_operations
from .models import Job

# A callback the job passes in: (percent, message) -> None, raising to cancel.
Progress = Callable[[float, str], None]
UNFINISHED = (Job.State.QUEUED, Job.State.RUNNING)
# What a dataset's deletion would break: jobs that read or write the project's nuclei. An inference
# works on an uploaded image of its own, so it may go on while a dataset goes.
DATASET_BLOCKERS = (Job.Kind.IMPORT, Job.Kind.TRAIN, Job.Kind.PREDICT, Job.Kind.EXPORT, Job.Kind.DELETE)
# A project's deletion removes everything, its model checkpoints and inference folders included.
PROJECT_BLOCKERS = tuple(kind for kind in Job.Kind if kind != Job.Kind.DIAGNOSTICS)


class DeletionRefused(Exception):
    """The deletion would break a job that started after it was asked for; the job fails with this."""


def busy_job(project_id: int, kinds: Iterable[str], *, exclude: Job | None = None) -> Job | None:
    """The oldest queued or running job of ``kinds`` in the project, other than ``exclude``."""
    jobs = Job.objects.filter(project_id=project_id, kind__in=list(kinds), state__in=UNFINISHED)
    if exclude is not None:
        jobs = jobs.exclude(pk=exclude.pk)
    return jobs.order_by("id").first()


def busy_message(job: Job, what: str) -> str:
    return (f"{what} cannot be deleted now: {job.described} of the project is {job.state} "
            f"(job {job.pk}), and deleting would break it. Wait for it to finish or cancel it, then delete again.")


def refuse_while_busy(project, kinds: Iterable[str], what: str) -> None:
    """409 when a job of ``kinds`` is queued or running in the project (request time)."""
    job = busy_job(project.pk, kinds)
    if job is not None:
        raise Conflict(busy_message(job, what), code="project_busy", job_id=job.pk)


def enqueue_deletion(project_id: int, kinds: Iterable[str], what: str, *, actor, params: dict, action: str, target,
                     still_there: Callable[[], bool] | None = None):
    """Queue a deletion job with its audit row, once no job of ``kinds`` is at work in the project (409
    otherwise). The project row is locked, so that a start of such a job cannot slip in between.
    ``still_there`` is asked under that lock: the same deletion asked twice (a double click, a retried
    request) may find the first one done since its target was looked up (404 then, not a second job)."""
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project_id)
        pending = busy_job(project.pk, [Job.Kind.DELETE])
        kind = params["target"]   # "dataset" or "project", and its id under that name
        if pending is not None and (pending.params or {}).get("target") == kind and \
                (pending.params or {}).get(kind) == params.get(kind):
            # The same deletion asked again (a double click, a retry): it is under way, nothing is in its way.
            raise Conflict(f"{what} is already being deleted (job {pending.pk}, {pending.state}).",
                           code="already_deleting", job_id=pending.pk)
        refuse_while_busy(project, kinds, what)
        if still_there is not None and not still_there():
            raise NotFound(f"{what} was deleted meanwhile.", code="already_deleted")
        job = job_operations.do_enqueue_job(Job.Kind.DELETE, actor=actor, project=project, params=params)
        audit.record(action, actor=actor, target=target, project=project, name=params["name"], job=job.pk)
    return job


def refuse_while_deleting(project, what: str) -> None:
    """409 for starting ``what`` (an import, a training) while a deletion in the project is pending."""
    job = busy_job(project.pk, [Job.Kind.DELETE])
    if job is not None:
        target = "the project" if job.params.get("target") == "project" else f"dataset {quoted(job.params.get('name'))}"
        raise Conflict(f"{what} cannot start now: {target} is being deleted (job {job.pk}, {job.state}). "
                       "Wait for the deletion to finish.", code="deletion_pending", job_id=job.pk)


def remove_media(relative: str) -> None:
    """Remove a folder of the media storage, here and (remote) in the bucket; never the media root itself
    or anything outside it."""
    if not relative:
        return
    try:
        name = media.clean_name(relative)
    except media.MediaNameError:
        return
    root = media.root().resolve()
    folder = media.work_path(name).resolve()
    if folder != root and folder.is_relative_to(root):
        media.delete(name)
