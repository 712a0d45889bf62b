"""Every state change of training: starting jobs, publishing versions, rollback, predictions, policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from webapp.core import audit
from webapp.core.api_errors import Conflict
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.jobs.sweep import staged_checkpoint
from webapp.projects.deletion import refuse_while_deleting
from webapp.projects.models import Project

from .models import ModelVersion, Prediction, RetrainPolicy

ACTIVE_STATES = (Job.State.QUEUED, Job.State.RUNNING)
TRAINING_OPTIONS = ("stages", "epochs", "backbone", "device", "batch_size", "samples_per_epoch")


def running_training(project: Project) -> Job | None:
    return Job.objects.filter(project=project, kind=Job.Kind.TRAIN, state__in=ACTIVE_STATES).order_by("id").first()


def do_start_training(project: Project, *, actor=None, options: dict | None = None, reason: str = "manual") -> Job:
    """Queue a training job; 409 (Conflict) when one is already queued or running for the project."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)  # serialises concurrent starts
        refuse_while_deleting(project, "A training")
        current = running_training(project)
        if current is not None:
            raise Conflict(f"Project {project.name!r} is already training (job {current.pk}, {current.state}); "
                           "wait for it to finish or cancel it.", job_id=current.pk)
        return job_operations.do_enqueue_job(Job.Kind.TRAIN, actor=actor, project=project,
                                             params={"options": options or {}, "reason": reason})


def models_dir(project: Project) -> Path:
    return Path(settings.MEDIA_ROOT) / "projects" / str(project.pk) / "models"


def do_publish_version(project: Project, *, job: Job, checkpoint: Path, config: dict, label_sets: list,
                       trained_on: dict, metrics: dict, data_snapshot_at, parent: ModelVersion | None) -> ModelVersion:
    """Copy the checkpoint into the project and publish it as the new active version, all or nothing."""
    target_dir = models_dir(project)
    target_dir.mkdir(parents=True, exist_ok=True)
    staged = Path(settings.MEDIA_ROOT) / staged_checkpoint(job)  # removed with the job if it is killed
    shutil.copyfile(checkpoint, staged)
    try:
        with transaction.atomic():
            Project.objects.select_for_update().get(pk=project.pk)
            number = (ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
            final = target_dir / f"v{number}.pt"
            ModelVersion.objects.filter(project=project, is_active=True).update(is_active=False)
            version = ModelVersion.objects.create(
                project=project, number=number, parent=parent, job=job,
                checkpoint_file=str(final.relative_to(settings.MEDIA_ROOT)), config=config, label_sets=label_sets,
                trained_on=trained_on, metrics=metrics, data_snapshot_at=data_snapshot_at, is_active=True)
            audit.record("model.published", actor=job.created_by, target=version, number=number,
                         parent=parent.number if parent else None, job=job.pk)
            staged.rename(final)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return version


def do_activate_version(version: ModelVersion, *, actor) -> ModelVersion:
    """Make an earlier (or later) version the active one: a rollback."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=version.project_id)
        previous = ModelVersion.objects.filter(project_id=version.project_id, is_active=True).first()
        ModelVersion.objects.filter(project_id=version.project_id, is_active=True).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
        audit.record("model.activated", actor=actor, target=version, number=version.number,
                     previous=previous.number if previous else None)
    version.is_active = True
    return version


def active_version(project: Project) -> ModelVersion | None:
    return ModelVersion.objects.filter(project=project, is_active=True).first()


def do_start_prediction(version: ModelVersion, *, actor=None) -> Job:
    return job_operations.do_enqueue_job(Job.Kind.PREDICT, actor=actor, project=version.project,
                                         params={"model_version": version.pk})


SLIVER_AREA = 40  # px: a nucleus smaller than this is a fragment (a typical one is a few hundred)


def sliver_ids(nucleus_ids) -> set[int]:
    """The slivers among these nuclei: cut by the image's edge (their box touches the border) or tiny."""
    from django.db.models import F, Q

    from webapp.datasets.models import Nucleus

    cut_or_tiny = (Q(x0__lte=0) | Q(y0__lte=0) | Q(x1__gte=F("image__width")) | Q(y1__gte=F("image__height"))
                   | Q(area__lt=SLIVER_AREA))
    return set(Nucleus.objects.filter(pk__in=list(nucleus_ids)).filter(cut_or_tiny).values_list("id", flat=True))


def do_store_predictions(version: ModelVersion, rows: list[Prediction], *, replace: bool = False) -> int:
    """Insert one batch of predictions (a prediction job calls this per chunk of images), each marked
    whether its nucleus is a sliver (served last by the review queue)."""
    slivers = sliver_ids({row.nucleus_id for row in rows})
    for row in rows:
        row.sliver = row.nucleus_id in slivers
    with transaction.atomic():
        Prediction.objects.bulk_create(rows, batch_size=5000, ignore_conflicts=replace)
    return len(rows)


# ------------------------------------------------------------------------------------- retraining policy

def do_set_retrain_policy(project: Project, *, actor, enabled: bool = True, min_new_reviews: int | None = None,
                          check_every_minutes: int = 15, cron: str = "", options: dict | None = None) -> RetrainPolicy:
    """Store the policy and its django-celery-beat schedules (one interval check, one optional cron)."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    cron_fields = cron.split() if cron else []
    if cron and len(cron_fields) != 5:
        raise ValueError(f"cron: {cron!r} needs five fields: minute hour day-of-month month day-of-week")
    with transaction.atomic():
        policy, _ = RetrainPolicy.objects.update_or_create(
            project=project, defaults={"enabled": enabled, "min_new_reviews": min_new_reviews,
                                       "check_every_minutes": check_every_minutes, "cron": cron,
                                       "options": options or {}})
        args = json.dumps([project.pk])
        check_name, cron_name = f"retrain-check-project-{project.pk}", f"retrain-cron-project-{project.pk}"
        if min_new_reviews:
            interval, _ = IntervalSchedule.objects.get_or_create(every=check_every_minutes,
                                                                 period=IntervalSchedule.MINUTES)
            PeriodicTask.objects.update_or_create(name=check_name, defaults={
                "task": "workers.tasks.check_retrain", "interval": interval, "crontab": None, "args": args,
                "enabled": enabled})
        else:
            PeriodicTask.objects.filter(name=check_name).delete()
        if cron:
            minute, hour, day, month, weekday = cron_fields
            crontab, _ = CrontabSchedule.objects.get_or_create(minute=minute, hour=hour, day_of_month=day,
                                                               month_of_year=month, day_of_week=weekday)
            PeriodicTask.objects.update_or_create(name=cron_name, defaults={
                "task": "workers.tasks.scheduled_retrain", "crontab": crontab, "interval": None, "args": args,
                "enabled": enabled})
        else:
            PeriodicTask.objects.filter(name=cron_name).delete()
        audit.record("project.retrain_policy_set", actor=actor, target=project, enabled=enabled,
                     min_new_reviews=min_new_reviews, cron=cron)
    return policy


def new_reviews_since_active(project: Project) -> int:
    from webapp.datasets.models import Label, LabelSource

    reviews = Label.objects.filter(nucleus__image__project=project, source=LabelSource.REVIEW)
    version = active_version(project)
    if version is not None:
        reviews = reviews.filter(created_at__gt=version.data_snapshot_at)
    return reviews.count()


def maybe_retrain(project: Project, *, reason: str) -> Job | None:
    """Start a scheduled training unless the policy says no or a training is already queued/running."""
    policy = RetrainPolicy.objects.filter(project=project, enabled=True).first()
    if policy is None:
        return None
    if reason == "threshold" and (not policy.min_new_reviews or new_reviews_since_active(project) < policy.min_new_reviews):
        return None
    try:
        return do_start_training(project, options=policy.options, reason=reason)
    except Conflict:
        return None


def snapshot_time():
    return timezone.now()
