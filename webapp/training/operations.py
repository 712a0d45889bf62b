"""Every state change of training: starting jobs, publishing versions, rollback, predictions, policy."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from mlcore.config import TTA_DEFAULT_SLIDES, TTA_DEFAULT_TILES

from mlcore.types import quoted

from webapp.core import audit, media
from webapp.core.cache import delete_on_commit, forget_frontiers, prediction_count_key, unreviewed_counts_key
from webapp.core.domain_errors import Conflict
from webapp.jobs import operations as job_operations
from webapp.jobs.deletion import refuse_while_deleting
from webapp.jobs.models import Job
from webapp.jobs.sweep import resume_checkpoint, staged_checkpoint
from webapp.projects.models import Project

from .models import ModelVersion, Prediction, RetrainPolicy
from .queries import active_version

ACTIVE_STATES = (Job.State.QUEUED, Job.State.RUNNING)
# The options a training takes (webapp.training.runner.training_config reads these, no others).
TRAINING_OPTIONS = ("stages", "epochs", "backbone", "device", "batch_size", "samples_per_epoch", "stain_jitter",
                    "grayscale", "crop_context_view", "ensemble", "predict_tta")
# Options that are not TrainConfig fields: which stages run, and how the new version's predictions are made.
NOT_CONFIG_OPTIONS = ("stages", "predict_tta")


def running_training(project: Project) -> Job | None:
    return Job.objects.filter(project=project, kind=Job.Kind.TRAIN, state__in=ACTIVE_STATES).order_by("id").first()


def running_import(project: Project) -> Job | None:
    """The project's first import (of tiles or of a slide) still queued or running, if any."""
    return Job.objects.filter(project=project, kind=Job.Kind.IMPORT, state__in=ACTIVE_STATES).order_by("id").first()


def refuse_without_training_data(project: Project) -> None:
    """A training reads the project's datasets once, as it starts: refuse it while an import would add to
    them (it would train without the new dataset, or find none and fail), or where there is nothing
    labelled to train on, rather than queue a job that fails for that."""
    from webapp.datasets.models import Dataset

    importing = running_import(project)
    if importing is not None:
        name = (importing.params or {}).get("name") or "a dataset"
        raise Conflict(f"The import of {quoted(name)} into project {quoted(project.name)} is still {importing.state} "
                       f"(job {importing.pk}): start the training once it has finished, so that it trains on "
                       "that dataset too.", code="import_running", job_id=importing.pk)
    labelled = Dataset.objects.filter(project=project, label_set__isnull=False)
    if settings.SLIDE_TRAINING_MAX_NUCLEI <= 0:
        labelled = labelled.exclude(format=Dataset.Format.SLIDE)
    if not labelled.exists() and not labelled_label_sets(project):
        slides = (" (SLIDE_TRAINING_MAX_NUCLEI is 0: its whole-slide images are not trained on)"
                  if Dataset.objects.filter(project=project, format=Dataset.Format.SLIDE).exists()
                  and settings.SLIDE_TRAINING_MAX_NUCLEI <= 0 else "")
        raise Conflict(f"Project {quoted(project.name)} has no labelled dataset to train on{slides}: upload one "
                       "first.", code="no_training_data")


def data_size(project: Project) -> dict:
    """Nuclei a training of the project reads, and those of them in datasets with a label set: every nucleus
    of its tile datasets (the datasets' own counts), and its slides' labelled nuclei up to
    SLIDE_TRAINING_MAX_NUCLEI (webapp.training.slide_data: a slide's unlabelled nuclei are not read)."""
    from webapp.datasets.models import Dataset

    from .slide_data import labelled_slides, nuclei_to_read

    rows = list(Dataset.objects.filter(project=project).exclude(format=Dataset.Format.SLIDE)
                .values_list("label_set_id", "nucleus_count"))
    slides = nuclei_to_read(labelled_slides(project))
    return {"nuclei": sum(n for _, n in rows) + slides,
            "labelled": sum(n for label_set, n in rows if label_set) + slides}


def default_training_options(project: Project, batch_size: int | None = None, size: dict | None = None) -> dict:
    """The epochs and draws per epoch a training of this project gets unless it is given its own
    (:func:`mlcore.estimate.default_schedule`: scaled to the project's nuclei, a small project's runs in minutes).
    ``size``: the project's :func:`data_size` where the caller has it (counting a slide's labels is a query)."""
    from mlcore.config import TrainConfig
    from mlcore.estimate import default_schedule

    return default_schedule((size or data_size(project))["nuclei"], batch_size or TrainConfig().batch_size)


class NotResumable(Conflict):
    """The training named cannot be resumed: the reason says why."""

    default_code = "not_resumable"


def resume_point(job: Job, project: Project | None = None) -> dict:
    """What a cancelled or failed training left to resume from: {"stage", "checkpoint", "remaining", ...}.
    Raises NotResumable (409) with the reason otherwise."""
    if job.kind != Job.Kind.TRAIN or (project is not None and job.project_id != project.pk):
        raise NotResumable(f"job {job.pk} is not a training of this project")
    if job.state not in (Job.State.CANCELLED, Job.State.FAILED):
        raise NotResumable(f"job {job.pk} is {job.state}: only a cancelled or failed training can be resumed")
    point = (job.result or {}).get("resume")
    discarded = (job.result or {}).get("resume_discarded")
    if not point and discarded:
        raise NotResumable(f"job {job.pk}'s checkpoint of stage {discarded.get('stage')} was discarded when a later "
                           "training of the project succeeded (it trained on older data): start a new training")
    if not point:
        # Releases before 2026-12-07 dropped a discarded point without a word (no "resume_discarded"): their jobs
        # may have finished stages.
        raise NotResumable(f"job {job.pk} left nothing to resume from: it finished no epoch before it stopped, or "
                           "its checkpoint was discarded when a later training succeeded; start a new training")
    if not media.exists(point["checkpoint"]):
        raise NotResumable(f"the checkpoint of job {job.pk}'s stage {point['stage']} is gone: start a new training")
    trained = point.get("label_sets")   # the label sets its stage learnt (points kept since they are recorded)
    if trained is not None and project is not None:
        # The resume learns the label sets labelled as of the stopped training's data snapshot, as it reads the
        # nuclei labelled then (webapp.training.runner.run_training): a review made or undone since does not
        # change them, a label set deleted since does. A point kept before the snapshot was recorded: as they are.
        now = labelled_label_sets(project, as_of=snapshot_of(point))
        if trained != now:
            raise NotResumable(f"the project's label sets changed since job {job.pk} trained its stage "
                               f"{point['stage']} ({', '.join(trained)}; now {', '.join(now) or 'none'}): "
                               "start a new training")
    return point


def snapshot_of(point: dict) -> datetime | None:
    """The data snapshot of a resume point: when the training it was kept by read the project's data (None for
    a point kept before it was recorded)."""
    return datetime.fromisoformat(point["snapshot_at"]) if point.get("snapshot_at") else None


def labelled_label_sets(project: Project, as_of: datetime | None = None) -> list[str]:
    """The names of the label sets a training of the project learns, in its order: those with a human label on a
    nucleus (webapp.training.runner.run_training leaves the others out); on a tile's only where the slides are
    not trained on (SLIDE_TRAINING_MAX_NUCLEI 0). With ``as_of`` (a training's data snapshot), those that had one
    then, as the label history tells (a label set whose only human label was undone since still counts; one first
    labelled since does not)."""
    from webapp.datasets.models import CurrentLabel, LabelSet

    from .slide_data import TRAINED_SOURCES, in_effect_as_of

    labelled = CurrentLabel.objects.filter(label_set=OuterRef("pk"), source__in=TRAINED_SOURCES)
    scope = Q(label_set__project=project)
    if settings.SLIDE_TRAINING_MAX_NUCLEI <= 0:
        labelled = labelled.filter(nucleus__image__slide_file="")
        scope &= Q(nucleus__image__slide_file="")
    then = Q(Exists(labelled))
    if as_of is not None:
        # A current label from then or before is as it was then; the pairs changed since, as they were then.
        then = Q(Exists(labelled.filter(label__created_at__lte=as_of))) | Q(
            pk__in=sorted({label_set_id for _, label_set_id in in_effect_as_of(scope, as_of)}))
    return list(LabelSet.objects.filter(project=project).filter(then).order_by("id").values_list("name", flat=True))


def do_start_training(project: Project, *, actor=None, options: dict | None = None, reason: str = "manual",
                      resume_from: Job | None = None, activate_only_if_not_lower: bool = False) -> Job:
    """Queue a training job; 409 (Conflict) when one is already queued or running for the project.

    Epochs and draws per epoch that ``options`` leaves out follow :func:`default_training_options`, and are
    stored in the job's params (they show what it runs). ``resume_from``: a cancelled or failed training
    that finished a stage; the new job runs its remaining stages from that stage's checkpoint, with its options.
    ``activate_only_if_not_lower``: the new version becomes active only if it is not lower than the active
    version on any label set (the retraining policy's guard; a resume keeps the resumed job's).
    """
    options = dict(options or {})
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)  # serialises concurrent starts
        refuse_while_deleting(project, "A training")
        current = running_training(project)
        if current is not None:
            raise Conflict(f"Project {quoted(project.name)} is already training (job {current.pk}, {current.state}); "
                           "wait for it to finish or cancel it.", code="training_running", job_id=current.pk)
        refuse_without_training_data(project)
        params = {"reason": reason}
        if resume_from is not None:
            point = resume_point(resume_from, project)
            device = options.get("device")
            options = {**(resume_from.params or {}).get("options", {}), "stages": point["remaining"]}
            if device:
                options["device"] = device
            # The job and stage only: the job page shows params, and the checkpoint's path is the server's.
            params.update(reason="resume", resume={"job": resume_from.pk, "stage": point["stage"]})
            activate_only_if_not_lower = bool((resume_from.params or {}).get("activate_only_if_not_lower"))
        else:
            defaults = default_training_options(project, options.get("batch_size"))
            options = {**defaults, **options}
        params["options"] = options
        if activate_only_if_not_lower:
            params["activate_only_if_not_lower"] = True
        return job_operations.do_enqueue_job(Job.Kind.TRAIN, actor=actor, project=project, params=params)


def do_keep_stage_checkpoint(job: Job, *, stage: str, checkpoint: Path, point: dict) -> dict:
    """A training finished a stage that is not its last, or an epoch of a stage it has not finished
    (``point["epoch"]``: the epochs done, of ``point["epochs"]``): keep that checkpoint beside the versions and
    name it in the job's result, so that the job, if it is cancelled, fails or loses its worker later, can be
    resumed from it. Replaces the job's earlier resume point (its file too, unless it is the same file)."""
    relative = resume_checkpoint(job, stage)
    target = media.work_path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, target)
    media.publish(relative)  # in the storage before the job's result names it
    point = {**point, "stage": stage, "checkpoint": relative}
    with transaction.atomic():
        row = Job.objects.select_for_update().get(pk=job.pk)
        previous = (row.result or {}).get("resume")
        row.result = {**(row.result or {}), "resume": point}
        row.save(update_fields=["result"])
        if "epoch" in point:
            audit.record("training.epoch_kept", target=row, stage=stage, epoch=point["epoch"], checkpoint=relative)
        else:
            audit.record("training.stage_kept", target=row, stage=stage, checkpoint=relative)
        if previous and previous.get("checkpoint") and previous["checkpoint"] != relative:
            obsolete = previous["checkpoint"]
            transaction.on_commit(lambda: media.delete(obsolete))
    return point


def do_discard_resume_points(project: Project, *, actor=None) -> int:
    """A training of the project succeeded: the stage checkpoints kept for resuming earlier ones are obsolete
    (the new version starts from newer data). Removes their files and the resume points; returns how many."""
    with transaction.atomic():
        jobs = list(Job.objects.select_for_update().filter(project=project, kind=Job.Kind.TRAIN,
                                                          result__has_key="resume"))
        files = []
        for job in jobs:
            files.append(job.result["resume"].get("checkpoint"))
            # What it had finished stays said: a resume asked for later is told why there is none.
            job.result = {**{k: v for k, v in job.result.items() if k != "resume"},
                          "resume_discarded": {"stage": job.result["resume"].get("stage"),
                                               "at": timezone.now().isoformat()}}
            job.save(update_fields=["result"])
        if jobs:
            audit.record("training.resume_points_discarded", actor=actor, target=project, jobs=[j.pk for j in jobs])
        transaction.on_commit(lambda: [media.delete(f) for f in files if f])
    return len(jobs)


def models_folder(project: Project) -> str:
    """The storage name of the folder of a project's published checkpoints."""
    return f"projects/{project.pk}/models"


def do_publish_version(project: Project, *, job: Job, checkpoint: Path, config: dict, label_sets: list,
                       trained_on: dict, metrics: dict, data_snapshot_at, parent: ModelVersion | None,
                       history: list | None = None, training_data: dict | None = None,
                       activate: bool = True) -> ModelVersion:
    """Copy the checkpoint into the project and publish it as the new active version (``activate``; else
    beside the active one, which stays), all or nothing. A version made active by a person while the training
    ran (a rollback: not ``parent``) stays active: the new one is published beside it, and its ``kept_active``
    names the one that stayed.

    The checkpoint is in the storage before the row that names it commits; the upload (remote) happens
    under the project's lock, as the version's number is only known there."""
    staged = media.work_path(staged_checkpoint(job))  # removed with the job if it is killed
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, staged)
    final = None
    try:
        with transaction.atomic():
            Project.objects.select_for_update().get(pk=project.pk)
            number = (ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
            final = f"{models_folder(project)}/v{number}.pt"
            active = ModelVersion.objects.filter(project=project, is_active=True).first()
            kept_active = active if activate and active is not None and active.pk != getattr(parent, "pk", None) \
                else None
            activate = activate and kept_active is None
            if activate:
                ModelVersion.objects.filter(project=project, is_active=True).update(is_active=False)
            version = ModelVersion.objects.create(
                project=project, number=number, parent=parent, job=job,
                checkpoint_file=final, config=config, label_sets=label_sets,
                trained_on=trained_on, metrics=metrics, data_snapshot_at=data_snapshot_at, is_active=activate,
                history=history or [], training_data=training_data or {})
            audit.record("model.published", actor=job.created_by, target=version, number=number,
                         parent=parent.number if parent else None, job=job.pk, active=activate)
            staged.rename(media.work_path(final))
            media.publish(final)
    except BaseException:
        staged.unlink(missing_ok=True)
        if final is not None:
            _remove_unnamed_checkpoint(project, final)
        raise
    version.kept_active = kept_active
    return version


def _remove_unnamed_checkpoint(project: Project, name: str) -> None:
    """A checkpoint published for a version whose row did not commit; left to the sweep when the database
    cannot say that no row names it."""
    try:
        named = ModelVersion.objects.filter(project=project, checkpoint_file=name).exists()
    except Exception:
        return
    if not named:
        media.delete(name)


def do_activate_version(version: ModelVersion, *, actor) -> ModelVersion:
    """Make an earlier (or later) version the active one: a rollback. Its ``prediction_jobs``: the predictions
    it queued of the images it has not classified yet (:func:`images_without_predictions`)."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=version.project_id)
        previous = ModelVersion.objects.filter(project_id=version.project_id, is_active=True).first()
        if previous is None or previous.pk != version.pk:   # the active one asked again: its predictions only
            ModelVersion.objects.filter(project_id=version.project_id, is_active=True).update(is_active=False)
            ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
            audit.record("model.activated", actor=actor, target=version, number=version.number,
                         previous=previous.number if previous else None)
        # Images imported while another version was active, or left by a prediction job that was cancelled or
        # failed, have none of this one's predictions: queue them (in the same transaction: with the task queue
        # down, nothing changes and the 503 says to try again).
        version.prediction_jobs = [job] if (job := do_predict_missing(version, actor=actor)) is not None else []
    version.is_active = True
    return version


def do_start_prediction(version: ModelVersion, *, actor=None, queued_by: Job | None = None,
                        tta: bool = TTA_DEFAULT_TILES) -> Job:
    """Classify every nucleus of the project with ``version``. ``tta``: test-time augmentation (the mean
    over the 8 flips and rotations of each crop) on the tile images; a whole slide among them is classified
    with the slides' default (mlcore.config.TTA_DEFAULT_SLIDES), as do_start_slide_prediction does.

    ``queued_by``: the training that made ``version`` and queues its predictions by itself. No person started
    them then (``actor`` None): the job's params name that training (``reason`` "training", ``started_by_job``),
    as its page, the job cards and the activity say. Who may cancel it is unchanged: a prediction is started and
    cancelled by curators (webapp.jobs.access), so the training's curator still may, as may any other."""
    params = {"model_version": version.pk, "tta": bool(tta)}
    if queued_by is not None:
        params.update(reason="training", started_by_job=queued_by.pk)
    return job_operations.do_enqueue_job(Job.Kind.PREDICT, actor=actor, project=version.project, params=params)


def do_predict_dataset(dataset, version: ModelVersion | None = None, *, actor=None,
                       queued_by: Job | None = None) -> Job | None:
    """Queue ``version``'s predictions (the active version's by default) of one tile dataset's nuclei: a dataset
    imported beside an active version, or one a version made active again has never seen, so that its nuclei
    reach review and the exports now, not after the next training. They are made as the version's other tiles
    were (with or without test-time augmentation). None for a slide (its millions of nuclei are predicted on
    request), without a version, or where that prediction is queued, running or made already (an import
    delivered again after its worker was lost: that job is returned) or the version's prediction of the whole
    project will make it. A failed or cancelled one is queued again. ``queued_by``: the import that stored the
    dataset and queues its predictions by itself, as do_start_prediction's training does (no person started them).
    """
    from webapp.datasets.models import Dataset

    version = version or active_version(dataset.project)
    if dataset.format == Dataset.Format.SLIDE or version is None:
        return None
    predictions = Job.objects.filter(project=dataset.project, kind=Job.Kind.PREDICT, params__model_version=version.pk)
    earlier = (predictions.filter(params__dataset=dataset.pk)
               .exclude(state__in=(Job.State.FAILED, Job.State.CANCELLED)).first())
    if earlier is not None:
        return earlier
    whole_project = predictions.exclude(params__has_key="image").exclude(params__has_key="dataset")
    # The version's prediction of the whole project lists the images as it starts: one still queued, or one
    # that started after the dataset was stored, classifies the dataset too.
    if (whole_project.filter(state=Job.State.QUEUED).exists()
            or whole_project.filter(state=Job.State.RUNNING, started_at__gt=dataset.uploaded_at).exists()):
        return None
    params = {"model_version": version.pk, "dataset": dataset.pk, "dataset_name": dataset.name,
              "tta": tta_as_before(whole_project)}
    if queued_by is not None:
        params.update(reason="import", started_by_job=queued_by.pk)
    return job_operations.do_enqueue_job(Job.Kind.PREDICT, actor=actor, project=dataset.project, params=params)


def tile_prediction_jobs(version: ModelVersion):
    """The version's prediction jobs of tile images (the project's, a dataset's, the missing ones'), not a slide's."""
    return Job.objects.filter(project_id=version.project_id, kind=Job.Kind.PREDICT,
                              params__model_version=version.pk).exclude(params__has_key="image")


def tta_as_before(jobs) -> bool:
    """Whether the newest of these prediction jobs used test-time augmentation (the default where none says):
    more predictions of a version are made as its others were."""
    newest = jobs.filter(params__has_key="tta").order_by("-id").first()
    return bool(newest.params["tta"]) if newest is not None else TTA_DEFAULT_TILES


def images_without_predictions(version: ModelVersion):
    """The project's tile images with nuclei of which ``version`` has predicted none: imported while another
    version was active, or left by a prediction job that was cancelled or failed (a job stores each image's
    predictions at once, so an image has all of them or none). A queryset, in id order; each image's check is an
    EXISTS subquery, not a round trip."""
    from webapp.datasets.models import Image

    return (Image.objects.filter(project_id=version.project_id, slide_file="", nucleus_count__gt=0)
            .exclude(Exists(Prediction.objects.filter(model_version=version, nucleus__image=OuterRef("pk"))))
            .order_by("id"))


def do_predict_missing(version: ModelVersion, *, actor=None) -> Job | None:
    """Queue ``version``'s predictions of the tile images it has none of (:func:`images_without_predictions`),
    made as its other tiles were (with or without test-time augmentation). None where no image lacks them, and
    the job already at work where one of the version's tile predictions is queued or running (it may be making
    them)."""
    predictions = tile_prediction_jobs(version)
    at_work = predictions.filter(state__in=(Job.State.QUEUED, Job.State.RUNNING)).order_by("id").first()
    if at_work is not None:
        return at_work
    if not images_without_predictions(version).exists():
        return None
    return job_operations.do_enqueue_job(Job.Kind.PREDICT, actor=actor, project=version.project,
                                         params={"model_version": version.pk, "missing": True,
                                                 "tta": tta_as_before(predictions)})


def do_start_slide_prediction(version: ModelVersion, image, *, actor=None, tta: bool = TTA_DEFAULT_SLIDES) -> Job:
    """Classify the nuclei of one whole-slide image with ``version`` (a prediction job of that image only,
    streamed through the slide in batches: webapp.training.runner.run_prediction). ``tta`` is off by default:
    a slide's millions of nuclei would take 8 times as long. Refused (409) while a deletion in the project is
    pending: the slide's rows may be going."""
    refuse_while_deleting(version.project, "A slide's classification")
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=version.project_id)   # two clicks at once: one job
        pending = Job.objects.filter(project=version.project, kind=Job.Kind.PREDICT, params__image=image.pk,
                                     params__model_version=version.pk,
                                     state__in=(Job.State.QUEUED, Job.State.RUNNING)).first()
        if pending is not None:
            raise Conflict(f"Slide {quoted(image.name)} is being classified by model v{version.number} already "
                           f"(job {pending.pk}, {pending.state}).", code="already_classifying", job_id=pending.pk)
        return job_operations.do_enqueue_job(Job.Kind.PREDICT, actor=actor, project=version.project,
                                             params={"model_version": version.pk, "image": image.pk,
                                                     "image_name": image.name, "tta": bool(tta)})


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
    whether its nucleus is a sliver (served last by the review queue). ``replace``: the version's earlier
    predictions of the same nuclei and label sets go (a job run again after a lost worker, or with other
    settings such as test-time augmentation)."""
    nucleus_ids = {row.nucleus_id for row in rows}
    label_set_ids = {row.label_set_id for row in rows}
    slivers = sliver_ids(nucleus_ids)
    for row in rows:
        row.sliver = row.nucleus_id in slivers
    with transaction.atomic():
        if replace:
            Prediction.objects.filter(model_version=version, nucleus_id__in=list(nucleus_ids),
                                      label_set_id__in=label_set_ids).delete()
        Prediction.objects.bulk_create(rows, batch_size=5000)
        # The review's counts of these label sets' predictions are stale now.
        delete_on_commit([prediction_count_key(version.pk, label_set_id) for label_set_id in label_set_ids]
                         + [unreviewed_counts_key(label_set_id) for label_set_id in label_set_ids])
        # So are the review queue's and the gallery's frontiers (where their searches start): found among the
        # predictions stored so far, they would pass over more uncertain nuclei of this batch until they expire.
        for label_set_id in label_set_ids:
            forget_frontiers(label_set_id)
    return len(rows)


# ------------------------------------------------------------------------------------- retraining policy

def do_set_retrain_policy(project: Project, *, actor, enabled: bool = True, min_new_reviews: int | None = None,
                          check_every_minutes: int = 15, cron: str = "", options: dict | None = None,
                          activate_only_if_not_lower: bool = False) -> RetrainPolicy:
    """Store the policy and its django-celery-beat schedules (one interval check, one optional cron)."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from .schedule import parse_cron

    cron = " ".join((cron or "").split())
    cron_fields = cron.split()
    if cron:
        parse_cron(cron)  # celery's own parser: beat would fail on what it refuses (Invalid on "cron")
    with transaction.atomic():
        policy, _ = RetrainPolicy.objects.update_or_create(
            project=project, defaults={"enabled": enabled, "min_new_reviews": min_new_reviews,
                                       "check_every_minutes": check_every_minutes, "cron": cron,
                                       "options": options or {},
                                       "activate_only_if_not_lower": activate_only_if_not_lower})
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
        # Every field the form saves: a change of the interval or of the scheduled runs' stages and epochs read as
        # the row before it, as if nothing had changed.
        audit.record("project.retrain_policy_set", actor=actor, target=project, enabled=enabled,
                     min_new_reviews=min_new_reviews, check_every_minutes=check_every_minutes, cron=cron,
                     options=options or {}, activate_only_if_not_lower=activate_only_if_not_lower)
    return policy


POLICY_FIELDS = ("enabled", "min_new_reviews", "check_every_minutes", "cron", "options", "activate_only_if_not_lower")


def do_change_retrain_policy(project: Project, *, actor, **changes) -> RetrainPolicy:
    """Change only the fields given (PATCH); the others keep their saved values (their defaults before the
    first save). A PUT that left fields out reset them, the guard ``activate_only_if_not_lower`` included."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)   # two changes at once: one after the other
        current = RetrainPolicy.objects.filter(project=project).first()
        # Before the first save the policy is shown off (RetrainPolicySerializer): a first PATCH of the schedule
        # alone saved the model's default, on, and started unattended nightly trainings.
        saved = {field: getattr(current, field) for field in POLICY_FIELDS} if current else {"enabled": False}
        return do_set_retrain_policy(project, actor=actor, **{**saved, **changes})


def new_reviews_since(version: ModelVersion | None, project: Project, after=None) -> int:
    """Reviewed labels a training after ``version`` would learn from that it did not: nuclei whose current label
    (per label set) is a review made after its data snapshot (all of the project's without a version), or after
    ``after`` where that is later.

    The current labels, not every review row: a decision taken back is no supervision (its nucleus's current
    label is the one before it again), and deciding a nucleus over and over is one new label, so undoing and
    deciding again cannot bring a retraining forward."""
    from webapp.datasets.models import CurrentLabel, LabelSource

    reviews = CurrentLabel.objects.filter(nucleus__image__project=project, source=LabelSource.REVIEW)
    if settings.SLIDE_TRAINING_MAX_NUCLEI <= 0:   # a slide's reviews are no supervision then
        reviews = reviews.filter(nucleus__image__slide_file="")
    since = max(filter(None, [version.data_snapshot_at if version else None, after]), default=None)
    if since is not None:
        reviews = reviews.filter(label__created_at__gt=since)
    return reviews.count()


def new_reviews_since_active(project: Project) -> int:
    return new_reviews_since(active_version(project), project)


def new_reviews_since_last_training(project: Project) -> int:
    """Reviewed labels the newest version did not see. The threshold counts these, not those since the active
    version: a version left inactive by the policy's guard, or a rollback, must not retrain on the same data
    at every check. A training that ended cancelled or failed since counts as one too: a person who cancelled
    the policy's training, or a training that fails on the data, is not started again at the next check, only
    once as many new reviews have come in after it."""
    newest = ModelVersion.objects.filter(project=project).order_by("-number").first()
    stopped = (Job.objects.filter(project=project, kind=Job.Kind.TRAIN, finished_at__isnull=False)
               .order_by("-finished_at").first())
    after = stopped.finished_at if stopped and stopped.state in (Job.State.CANCELLED, Job.State.FAILED) else None
    return new_reviews_since(newest, project, after=after)


def maybe_retrain(project: Project, *, reason: str) -> Job | None:
    """Start a scheduled training unless the policy says no or a training is already queued/running."""
    policy = RetrainPolicy.objects.filter(project=project, enabled=True).first()
    if policy is None:
        return None
    if reason == "threshold" and (not policy.min_new_reviews
                                  or new_reviews_since_last_training(project) < policy.min_new_reviews):
        return None
    try:
        return do_start_training(project, options=policy.options, reason=reason,
                                 activate_only_if_not_lower=policy.activate_only_if_not_lower)
    except Conflict:
        return None

