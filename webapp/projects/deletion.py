"""A project's deletion, asked for on its page or the API and carried out by a ``delete`` job, and the job
itself, which deletes a dataset or a whole project (how a deletion is queued and refused, and why:
:mod:`webapp.jobs.deletion`).

Deleting a project deletes its datasets and refuses while their jobs run: this module sits above the
apps whose rows it removes (its own layer in tests/test_layering_imports.py), as the project's pages do.
"""

from __future__ import annotations

from django.db import transaction
from django_celery_beat.models import PeriodicTask

from mlcore.types import quoted

from webapp.core import audit
from webapp.datasets.deletion import delete_images, nucleus_total
from webapp.datasets.models import Dataset
from webapp.datasets.operations import do_delete_dataset
from webapp.jobs.deletion import (PROJECT_BLOCKERS, DeletionRefused, Progress, busy_job, busy_message,
                                  enqueue_deletion, remove_media)
from webapp.jobs.models import Job

from .models import Project


def project_media(project_id: int) -> str:
    """The folder of everything a project stores: datasets, model checkpoints, inference files."""
    return f"projects/{int(project_id)}"


def do_request_project_deletion(project: Project, *, actor):
    """Queue the deletion of the whole project (rows and files) as a job, once none of its jobs is queued or
    running (409 otherwise); returns the job."""
    return enqueue_deletion(project.pk, PROJECT_BLOCKERS, f"Project {quoted(project.name)}", actor=actor,
                            params={"target": "project", "project": project.pk, "name": project.name},
                            action="project.deletion_requested", target=project)


def do_delete_project(project: Project, *, job=None, progress=None) -> dict:
    """Delete a project and everything in it (datasets, label sets, model versions, jobs, members, its
    retraining schedules) in one transaction, then its folder of files.

    The deletion job itself is detached from the project last (a job row follows its project), so that
    it stays to tell its creator how the deletion went."""
    progress = progress or (lambda percent, message: None)
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        blocker = busy_job(project.pk, PROJECT_BLOCKERS, exclude=job)
        if blocker is not None:
            raise DeletionRefused(busy_message(blocker, f"Project {quoted(project.name)}"))
        datasets = Dataset.objects.filter(project=project)
        # Their rows locked before anything is deleted: a reviewer's save on one of their nuclei in flight ends
        # first, and one made meanwhile waits and finds it gone (webapp.datasets.being_deleted).
        dataset_ids = list(datasets.select_for_update().order_by("id").values_list("pk", flat=True))
        summary = {"target": "project", "deleted": True, "name": project.name, "project": project.pk,
                   "datasets": datasets.count(), "images": sum(datasets.values_list("image_count", flat=True)),
                   "nuclei": nucleus_total(datasets), "members": project.memberships.count(),
                   "model_versions": project.model_versions.count()}
        progress(0, f"deleting {summary['datasets']} datasets, {summary['nuclei']} nuclei")
        delete_images(dataset_ids, progress, done=0, total=summary["nuclei"],
                      start=0, span=90)
        datasets.delete()
        # The schedules of its retraining policy (webapp.training.operations.do_set_retrain_policy).
        PeriodicTask.objects.filter(name__in=[f"retrain-check-project-{project.pk}",
                                              f"retrain-cron-project-{project.pk}"]).delete()
        target = audit.target_of(project)
        if job is not None:
            # Progress is written on another connection (webapp.jobs.operations.progress_database): no
            # progress may be reported after this, which locks the job's row until the commit.
            Job.objects.filter(pk=job.pk).update(project=None)
        project.delete()
        audit.record("project.deleted", actor=getattr(job, "created_by", None), target=target,
                     job=getattr(job, "pk", None),
                     **{k: summary[k] for k in ("name", "datasets", "images", "nuclei", "members")})
        folder = project_media(summary["project"])
        transaction.on_commit(lambda: remove_media(folder))
    return summary


def run_deletion_job(job: Job, progress: Progress) -> dict:
    """What the ``delete`` job does (workers.handlers): the deletion its parameters name."""
    params = job.params
    if params.get("target") == "dataset":
        dataset = Dataset.objects.filter(pk=params.get("dataset")).first()
        if dataset is None:
            return {"target": "dataset", "name": params.get("name"), "deleted": False,
                    "detail": "the dataset was already gone"}
        return do_delete_dataset(dataset, job=job, progress=progress)
    if params.get("target") == "project":
        project = Project.objects.filter(pk=params.get("project")).first()
        if project is None:
            return {"target": "project", "name": params.get("name"), "deleted": False,
                    "detail": "the project was already gone"}
        return do_delete_project(project, job=job, progress=progress)
    raise ValueError(f"a deletion job needs target 'dataset' or 'project', not {params.get('target')!r}")
