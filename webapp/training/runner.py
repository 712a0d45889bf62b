"""What the training, prediction and inference jobs do, on top of mlcore. Workers call these."""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
from django.conf import settings
from django.utils import timezone

from mlcore.checkpoint import LoadedCheckpoint, load_checkpoint
from mlcore.config import TTA_DEFAULT_SLIDES, TTA_DEFAULT_TILES, TrainConfig
from mlcore.data import ImageRecord, split_by_group, split_notes, table_from_arrays
from mlcore.predict import predict
from mlcore.slides import SlideError
from mlcore.train import STAGES, compare_models, evaluate_with_logits, train_all
from mlcore.types import Cancelled, DataError, quoted
from mlcore.types import LabelSet as MLLabelSet
from webapp.core import media
from webapp.core.domain_errors import Unavailable
from webapp.datasets import bulk
from webapp.datasets.importing import load_mask, load_rgb
from webapp.datasets.models import CurrentLabel, Image, LabelSet, Nucleus
from webapp.jobs.models import Job
from webapp.jobs.sweep import remove_job_paths, scratch_folder

from . import operations
from .comparison import describe_comparison, lower_label_sets
from .models import ModelVersion, Prediction
from .queries import active_version
from .slide_data import labelled_slides, nuclei_to_read, slide_training_data

Report = Callable[..., None]          # report(percent, **details)
ShouldStop = Callable[[], bool]


# How the job logs say how each nucleus was classified.
VIEWS = {True: "test-time augmentation: the mean over 8 flips and rotations", False: "one view per nucleus"}


def project_label_sets(project) -> list[tuple[LabelSet, MLLabelSet]]:
    rows = LabelSet.objects.filter(project=project).prefetch_related("classes").order_by("id")
    return [(row, MLLabelSet(row.name, tuple(c.name for c in row.classes.all()),
                             tuple(tuple(int(c.color[i:i + 2], 16) for i in (1, 3, 5)) for c in row.classes.all())))
            for row in rows]


def known_labels(project) -> tuple[dict, dict]:
    """{image id: {label set name: {instance id: class}}} and the counts per source, from CurrentLabel.

    CurrentLabel holds the latest human label of each nucleus and label set, so a review overrides
    the ground truth in its label set, and reviews of nuclei from other datasets fill their gaps.
    """
    labels: dict = defaultdict(lambda: defaultdict(dict))
    counts: dict = defaultdict(lambda: defaultdict(int))
    # Tile images only: a slide's labels are read with its crops (webapp.training.slide_data).
    rows = (CurrentLabel.objects.filter(nucleus__image__project=project, nucleus__image__slide_file="",
                                        source__in=("ground_truth", "review"))
            .values_list("nucleus__image_id", "label_set__name", "nucleus__instance_id", "class_index", "source"))
    for image_id, set_name, instance_id, class_index, source in rows.iterator(chunk_size=20_000):
        labels[image_id][set_name][instance_id] = class_index
        counts[set_name][source] += 1
    return labels, {name: dict(sources) for name, sources in counts.items()}


def training_config(options: dict, parent: ModelVersion | None) -> tuple[TrainConfig, list[str]]:
    """The training's config (its options over the parent version's) and its stages: the options other
    than ``stages`` and ``predict_tta`` are TrainConfig fields."""
    fields = set(operations.TRAINING_OPTIONS) - set(operations.NOT_CONFIG_OPTIONS)
    config = TrainConfig.from_dict({**(TrainConfig.saved(parent.config) if parent else {}),
                                    **{k: v for k, v in options.items() if k in fields}})
    stages = options.get("stages") or list(STAGES)
    if isinstance(stages, str):
        stages = list(STAGES) if stages == "all" else [stages]
    return config, list(stages)


UNKNOWN = object()   # a resume point kept before fine_tuned_from was recorded


def fresh_start_reason(parent: LoadedCheckpoint, label_sets, config: TrainConfig) -> str | None:
    """Why a training starts a new network rather than fine-tuning the parent version's, or None when it
    fine-tunes: not when the taxonomies changed (other heads), nor when the crops changed (a wider view has
    more input channels), nor when the number of models averaged changed (each model of an ensemble goes on
    from its own)."""
    if [(s.name, s.classes) for s in parent.label_sets] != [(s.name, s.classes) for s in label_sets]:
        return "the label sets or their classes changed"
    if parent.model.crop_spec != config.crop_spec:
        return f"it cut {parent.model.crop_spec.text()}; this training cuts {config.crop_spec.text()}"
    models = len(getattr(parent.model, "members", [parent.model]))
    if models != config.ensemble:
        return f"it averages {models} model{'s' if models != 1 else ''}; this training {config.ensemble}"
    return None


def continues_from(parent: LoadedCheckpoint, label_sets, config: TrainConfig) -> bool:
    """Whether a training fine-tunes the parent version's network (:func:`fresh_start_reason`)."""
    return fresh_start_reason(parent, label_sets, config) is None


class TrainingProgress:
    """mlcore's progress (one call per batch) as the job's: the percentage of the whole job, the epoch as
    people count it (1 to epochs), an ETA for the rest of the training rather than for the running stage
    only, and a log line when a stage begins and when an epoch ends.

    mlcore calls once as a stage begins (``steps`` 0, ``epoch`` = epochs already done), then after every
    batch (``epoch`` 1-based, ``step`` of ``steps``, ``eta_s`` for the rest of the stage). The stages still
    to come are costed at the seconds per epoch measured so far: a backbone stage (sparse, completion)
    at its epochs times that; stage 2 (correlation) trains small MLPs on features computed once, about
    one backbone epoch in all. An estimate, refined as each stage measures its own pace."""

    START, SPAN = 5.0, 90.0  # percent of the job: loading the images before, publishing after

    def __init__(self, stages, epochs: dict, report: Report, clock: Callable[[], float] = time.monotonic):
        self.stages = list(stages)
        self.epochs = {stage: max(1, int(epochs.get(stage, 1))) for stage in self.stages}
        self.report = report
        self.clock = clock
        self.stage_started = clock()
        self.seconds_per_epoch: float | None = None  # per backbone epoch (per stage 2, when nothing else ran)
        self.measured_backbone = False

    def _units(self, stage: str) -> int:
        return 1 if stage == "correlation" else self.epochs.get(stage, 1)

    def _eta(self, stage: str, index: int, fraction: float, stage_eta, now: float) -> float | None:
        if isinstance(stage_eta, (int, float)) and math.isfinite(stage_eta):
            projected = now - self.stage_started + stage_eta  # this stage's whole duration, as it goes
            if stage != "correlation":
                self.seconds_per_epoch, self.measured_backbone = projected / self._units(stage), True
            elif not self.measured_backbone:
                self.seconds_per_epoch = projected
        else:
            stage_eta = None
        if self.seconds_per_epoch is None:
            return stage_eta
        later = sum(self._units(s) for s in self.stages[index + 1:]) * self.seconds_per_epoch
        if stage_eta is None:  # the stage has just begun: cost it as the others
            stage_eta = self._units(stage) * (1 - fraction) * self.seconds_per_epoch
        return stage_eta + later

    def __call__(self, info: dict) -> None:
        stage = info.get("stage")
        index = self.stages.index(stage) if stage in self.stages else 0
        epochs = max(1, int(info.get("epochs") or self.epochs.get(stage, 1)))
        steps, step = int(info.get("steps") or 0), int(info.get("step") or 0)
        # An ensemble trains each stage once per model, in turn: the stage's share is split between them.
        members, member = max(1, int(info.get("members") or 1)), max(1, int(info.get("member") or 1))
        model = f"model {member}/{members}, " if members > 1 else ""
        now = self.clock()
        loss = info.get("loss")
        log = None
        if steps == 0:  # the stage begins, after info["epoch"] epochs (a resumed stage has some done)
            self.stage_started = now
            done = min(int(info.get("epoch") or 0), epochs)
            epoch, fraction = min(done + 1, epochs), done / epochs
            log = f"{model}stage {stage}: {epochs} epoch{'s' if epochs != 1 else ''}"
        else:
            epoch = min(max(int(info.get("epoch") or 1), 1), epochs)
            fraction = min(1.0, (epoch - 1 + step / steps) / epochs)
            if step == steps:   # the epoch's mean loss, as its history entry (the last batch's may hold 2 nuclei)
                mean = info.get("epoch_loss")
                log = (f"{model}stage {stage}, epoch {epoch}/{epochs} done"
                       + (f": loss {mean:.4f}" if isinstance(mean, float) and math.isfinite(mean) else ""))
        eta = self._eta(stage, index, fraction, info.get("eta_s"), now)
        if members > 1 and eta is not None and self.seconds_per_epoch:
            # _eta costs this model's rest of the stage and one model's later stages; the other models' turns
            # at this stage and at the later ones come on top.
            turns = (members - member) * self._units(stage) + \
                (members - 1) * sum(self._units(s) for s in self.stages[index + 1:])
            eta += turns * self.seconds_per_epoch
        fraction = (member - 1 + fraction) / members
        percent = self.START + self.SPAN * (index + fraction) / len(self.stages)
        self.report(percent, stage=stage, epoch=epoch, epochs=epochs, loss=loss, eta_s=eta, log=log,
                    **({"model": member, "models": members} if members > 1 else {}))


def _stored_file(name: str) -> Path | None:
    """A local copy of the stored file ``name`` (mirrored from the object store when remote), or None."""
    try:
        path = media.local_path(name)
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


def crop_cache_dir() -> Path:
    """The crop cache: derived from the images, so kept per host under DATA_DIR, never in the media storage."""
    return Path(settings.DATA_DIR) / "cache" / "crops"


class Resume:
    """A training that goes on from a kept checkpoint (``point``, a job's ``result["resume"]``): the last finished
    stage of a cancelled or failed training, or the last epoch of its unfinished stage (``point["epoch"]``)."""

    def __init__(self, source_job: int, point: dict, path: Path, options: dict, own: bool = False):
        self.own = own  # the job's own point, kept by an attempt whose worker was lost
        self.point = {**point, "job": source_job}
        self.checkpoint = load_checkpoint(path)
        extra = self.checkpoint.raw.get("extra") or {}
        self.history = list(extra.get("history") or [])
        self.val_rows = np.asarray(extra.get("val_rows") or [], dtype=np.int64)
        # The run it resumes ran with these settings (and seed); only the device may differ.
        self.config = TrainConfig.from_dict({**self.checkpoint.config.to_dict(),
                                             **({"device": options["device"]} if options.get("device") else {})})
        self.stages = list(self.point["remaining"])

    @classmethod
    def of(cls, job: Job, options: dict) -> Resume | None:
        """Where ``job`` goes on from: for a training delivered again after its worker was lost, the point its
        lost attempt kept (so that the loss costs an epoch, not the training); else the point of the training a
        user resumes (``params["resume"]``); None for a training from the start."""
        own = (job.result or {}).get("resume") if job.attempts > 1 else None
        path = _stored_file(own["checkpoint"]) if own else None
        if path is not None:
            return cls(job.pk, own, path, options, own=True)
        asked = job.params.get("resume")  # {"job": id, "stage": name}
        if not asked:
            return None
        source = Job.objects.filter(pk=asked["job"]).only("result").first()
        point = (source.result or {}).get("resume") if source else None
        path = _stored_file(point["checkpoint"]) if point and point.get("stage") == asked["stage"] else None
        if path is None:
            raise operations.NotResumable(f"the checkpoint of job {asked['job']}'s stage {asked['stage']} is gone (a "
                                          "training of the project succeeded since): start a new training")
        return cls(asked["job"], point, path, options)

    def describe(self) -> str:
        """How the job log says where the training goes on from."""
        point, whose = self.point, "its lost attempt" if self.own else f"job {self.point['job']}"
        if "epoch" in point:
            return (f"going on from {whose}'s epoch {point['epoch']} of {point['epochs']} of stage {point['stage']}: "
                    f"stage {point['stage']} resumes at epoch {point['epoch'] + 1}")
        return f"going on after {whose}'s finished stage {point['stage']}"

    def check(self, table, ml_label_sets, digest: str) -> None:
        """The data must be what the stage was trained on: the same label sets and nuclei (``digest``: the
        table's, :func:`table_digest`)."""
        job_id = self.point["job"]
        theirs = [(s.name, s.classes) for s in self.checkpoint.label_sets]
        if theirs != [(s.name, s.classes) for s in ml_label_sets]:
            raise operations.NotResumable(f"the project's label sets changed since job {job_id} trained its stage "
                                          f"{self.point['stage']}: start a new training")
        if len(table) != self.point.get("nuclei", len(table)):
            raise operations.NotResumable(f"the project has {len(table)} nuclei, job {job_id} trained on "
                                          f"{self.point['nuclei']}: its data changed, so start a new training")
        # The same count of other nuclei (a dataset deleted and another as large imported) would resume with the
        # saved validation rows pointing at nuclei the stage trained on.
        if self.point.get("nuclei_digest", digest) != digest:
            raise operations.NotResumable(f"the project's nuclei are not those job {job_id} trained on (as many, "
                                          "but other images): start a new training")

    def rows(self, table) -> tuple[np.ndarray, np.ndarray]:
        """The validation split the resumed run used, so that its validation nuclei stay unseen."""
        return np.setdiff1d(np.arange(len(table)), self.val_rows), self.val_rows


def table_digest(table) -> str:
    """Which nuclei a training table holds, in its order: its images (dataset and image ids, names) and each
    row's image and instance id."""
    digest = hashlib.sha256("\n".join(table.image_names).encode())
    digest.update(np.ascontiguousarray(table.image_index, np.int64).tobytes())
    digest.update(np.ascontiguousarray(table.instance_ids, np.int64).tobytes())
    return digest.hexdigest()


def table_names(images: list[Image]) -> dict[int, str]:
    """Each dataset's name in the training table, by dataset id: the name its validation split is drawn by
    (Dataset.split_name), made unique in id order (a dataset renamed from "colon" and a new "colon" would
    otherwise be read as one)."""
    names: dict[int, str] = {}
    for dataset in sorted({image.dataset_id: image.dataset for image in images}.values(), key=lambda d: d.pk):
        name = dataset.split_name
        while name in names.values():
            name = f"{name} #{dataset.pk}"
        names[dataset.pk] = name
    return names


def datasets_read(images: list[Image], nuclei_taken: dict[int, int] | None = None) -> list[dict]:
    """The datasets of the images a training read, as they were when it read them (names, counts): a dataset
    uploaded or renamed while it trains is not what it trained on. ``nuclei_taken``: the nuclei read of an
    image where not all of them (a slide's labelled ones, webapp.training.slide_data)."""
    read: dict[int, dict] = {}
    for image in images:
        dataset = image.dataset
        entry = read.setdefault(dataset.pk, {
            "name": dataset.name, "format": dataset.format,
            "label_set": dataset.label_set.name if dataset.label_set else None, "images": 0, "nuclei": 0})
        entry["images"] += 1
        entry["nuclei"] += (nuclei_taken or {}).get(image.pk, image.nucleus_count)
    return [read[pk] for pk in sorted(read)]


def training_data(datasets: list[dict], table, result, stages: list[str], resume: Resume | None) -> dict:
    done_before = list(resume.point.get("done", [])) if resume else []
    built = result.model.describe()   # what "auto" became on the worker that trained it
    return {"datasets": datasets, "nuclei": int(len(table)),
            "backbone": {"name": built["backbone"], "options": _jsonable(built["backbone_kwargs"])},
            "split": {"train": int(len(result.train_rows)), "validation": int(len(result.val_rows))},
            "stages": done_before + list(stages),
            "resumed_from_job": resume.point["job"] if resume is not None and not resume.own else None,
            **({"members": [{"seed": m["seed"], "metrics": summary(m["metrics"])} for m in result.members]}
               if result.members else {})}


SUMMARY_KEYS = ("n", "accuracy", "macro_f1", "weighted_f1", "tta")


def summary(metrics: dict) -> dict:
    """Each label set's headline figures of mlcore.train.evaluate's reports."""
    return {name: {k: m[k] for k in SUMMARY_KEYS if k in m} for name, m in metrics.items() if isinstance(m, dict)}


def validation_metrics(table, result, tta: bool, should_stop: ShouldStop | None = None
                       ) -> tuple[dict, dict, tuple | None]:
    """The new version's validation metrics, scored as its predictions will be made (``tta``: the mean over
    the 8 flips and rotations; each label set's report says ``"tta"``); how: {"tta": bool, "one_view":
    {name: summary}} (with TTA, the one-view figures beside, as versions from before TTA were scored); and
    with TTA the model's logits of those nuclei, for the comparison with the replaced version to reuse.

    Why not mlcore's own metrics alone: they are one view, and a reviewer sees predictions made with TTA;
    the version's figures, and the guard that decides whether it becomes active, should be theirs."""
    if not tta or not len(result.val_rows):
        return {name: {**report, "tta": False} for name, report in result.metrics.items()}, {"tta": False}, None
    metrics, outputs = evaluate_with_logits(result.model, table, result.val_rows, tta=True, should_stop=should_stop)
    return ({name: {**report, "tta": True} for name, report in metrics.items()},
            {"tta": True, "one_view": summary(result.metrics)}, outputs)


def compared_with_parent(parent: ModelVersion | None, table, result, tta: bool = False,
                         outputs: tuple | None = None, should_stop: ShouldStop | None = None) -> dict | None:
    """The new model against the active version it replaces, on the new one's validation nuclei
    (mlcore.train.compare_models), both scored alike (``tta`` as the new version's predictions):
    {"version": number, "tta": bool, "label_sets": {...}}, or {"version", "skipped": why} when the parent
    cannot score them. None without a parent or validation nuclei. ``outputs``: the new model's logits of
    those nuclei when they were computed already (validation_metrics)."""
    if parent is None or not len(result.val_rows):
        return None
    try:   # loaded afresh: a fine-tuning trained the parent's loaded model in place
        previous = load_checkpoint(media.local_path(parent.checkpoint_file)).model.eval()
    except (OSError, ValueError):   # gone or unreadable: the new version is published all the same
        return {"version": parent.number, "skipped": f"the checkpoint file of v{parent.number} could not be read"}
    try:
        label_sets = compare_models(result.model, previous, table, result.val_rows, tta=tta, outputs=outputs,
                                    should_stop=should_stop)
    except ValueError as exc:
        return {"version": parent.number, "skipped": f"v{parent.number} cannot score these nuclei: {exc}"}
    return {"version": parent.number, "tta": bool(tta), "label_sets": _jsonable(label_sets)}


def stages_before(stages: list[str], init) -> list[str]:
    """The stages to run before ``stages`` so that each goes on from the one before it: stage 2 fits its heads
    to a trained backbone, stage 3 takes pseudo labels from those heads. ``init``: the checkpoint the training
    starts from (None: a new network). The CLI refuses such a start; a web training (a new network because the
    label sets or the crops changed, or a first training asked for stage 3 alone) runs them, where it made
    stage 3 of a random network the active version."""
    reached = STAGES.index(init.stage) + 1 if init is not None else 0   # the stages its network went through
    return list(STAGES[reached:STAGES.index(stages[0])])


def run_training(job: Job, report: Report, should_stop: ShouldStop) -> dict:
    project = job.project
    snapshot_at = timezone.now()
    labels, trained_on = known_labels(project)
    parent = active_version(project)
    options = job.params.get("options", {})
    # How the new version's predictions of the tiles will be made, and so how it is scored.
    tta = bool(options.get("predict_tta", TTA_DEFAULT_TILES))
    resume = Resume.of(job, options)
    if resume is not None:
        config, stages = resume.config, resume.stages
        # The data as the stages done before read it: the reviews made since have not all been learnt (stage 1
        # never saw them), so the retraining threshold must still count them (new_reviews_since).
        if resume.point.get("snapshot_at"):
            snapshot_at = min(snapshot_at, datetime.fromisoformat(resume.point["snapshot_at"]))
    else:
        config, stages = training_config(options, parent)
    # A label set without a labelled nucleus would be an output the network never learns, scored on no
    # validation nuclei: it is left out of the model. A resume learns those labelled as of its data snapshot, as
    # it reads the nuclei labelled then: a label set whose only review was undone since stays in (its nuclei
    # unlabelled now), one first labelled since waits for the next training.
    all_pairs = project_label_sets(project)
    labelled = set(operations.labelled_label_sets(project, as_of=snapshot_at if resume is not None else None))
    label_set_pairs = [(row, ml) for row, ml in all_pairs if row.name in labelled]
    if not label_set_pairs:
        raise ValueError("the project has no labelled nucleus to train on: upload a labelled dataset, or review "
                         "some nuclei, first")
    ml_label_sets = [ml for _, ml in label_set_pairs]
    kept = {row.pk for row, _ in label_set_pairs}
    untrained = [row.name for row, _ in all_pairs if row.pk not in kept]
    trained_on = {name: counts for name, counts in trained_on.items() if name in labelled}
    if len(ml_label_sets) < 2 and stages != ["sparse"]:
        # Label correlation needs a second label set: one taxonomy trains stage 1 only, and says so.
        report(0.0, stage="loading", log=f"stage{'s' if len(stages) > 1 else ''} {', '.join(stages)} asked for; "
               "stage sparse only is run: stages correlation and completion need a second labelled label set")
        stages = ["sparse"]
    config.cache_dir = str(crop_cache_dir())
    if untrained:
        report(0.0, stage="loading", log=f"label set(s) {', '.join(repr(n) for n in untrained)} left out: no "
                                         "labelled nucleus to learn them from")
    images = list(Image.objects.filter(project=project, slide_file="").select_related("dataset__label_set")
                  .order_by("id"))
    # A slide's labelled nuclei only, each cut from the slide (slide_data says why and how many).
    # The nuclei labelled as of the data snapshot: a resume reads those the stopped training read.
    slides = labelled_slides(project, as_of=snapshot_at) if settings.SLIDE_TRAINING_MAX_NUCLEI > 0 else []
    unread_slides = Image.objects.filter(project=project).exclude(slide_file="").exclude(
        pk__in=[image.pk for image, _ in slides]).count()
    if unread_slides:
        report(0.0, stage="loading", log=f"{unread_slides} whole-slide image(s) left out: " + (
            "no labelled nucleus on them" if settings.SLIDE_TRAINING_MAX_NUCLEI > 0
            else "SLIDE_TRAINING_MAX_NUCLEI is 0"))
    split_names = table_names(images + [image for image, _ in slides])
    # Loading's 5 % shared by nuclei: a slide's crops (up to SLIDE_TRAINING_MAX_NUCLEI of them, minutes to cut)
    # counted as one image beside the tiles left the bar at 4.5-5 % while they were cut.
    tile_work = [max(image.nucleus_count, 1) for image in images]
    slide_work = nuclei_to_read(slides)
    work = max(sum(tile_work) + slide_work, 1)
    records, loaded = [], 0
    for number, image in enumerate(images, start=1):
        records.append(ImageRecord(image=load_rgb(image), instance_map=load_mask(image),
                                   labels={k: dict(v) for k, v in labels.get(image.pk, {}).items() if k in labelled},
                                   # Not the name shown: a rename would draw another validation split.
                                   dataset=split_names[image.dataset_id], name=f"{image.dataset_id}/{image.name}",
                                   group=f"{image.dataset_id}/{image.group or image.name}"))
        loaded += tile_work[number - 1]
        report(5.0 * loaded / work, stage="loading", message=f"image {number}/{len(images)}")
        if should_stop():
            raise Cancelled()
    slide_data = slide_training_data(
        slides, {ml.name for ml in ml_label_sets}, config.crop_spec, cache_dir=config.cache_dir,
        split_names=split_names, should_stop=should_stop, as_of=snapshot_at,
        report=lambda done, total, message: report(5.0 * (loaded + slide_work * done / max(total, 1)) / work,
                                                   stage="loading", message=message))
    for note in slide_data.notes:
        report(5.0, stage="loading", log=note)
    for name, sources in slide_data.counts.items():
        for source, count in sources.items():
            trained_on.setdefault(name, {})
            trained_on[name][source] = trained_on[name].get(source, 0) + count
    datasets = datasets_read(images + [image for image, _ in slides if image.pk in slide_data.nuclei],
                             slide_data.nuclei)
    if not records and not slide_data.records:
        raise ValueError("the project has no image to train on: upload a labelled dataset first")
    table = table_from_arrays(records + slide_data.records, ml_label_sets, cache_dir=config.cache_dir,
                              crop_size=config.crop_spec)
    slides_read = (f" and {sum(slide_data.nuclei.values())} labelled nuclei of {len(slide_data.nuclei)} slide(s)"
                   if slide_data.nuclei else "")
    del records, slide_data
    report(5.0, stage="loading", log=f"loaded {len(images)} images{slides_read}, {len(table.labels)} nuclei; "
                                     f"training stages {', '.join(stages)}"
                                     + (f" ({resume.describe()})" if resume is not None else ""))
    trained_on["unlabelled_nuclei"] = int((table.labels == -1).all(axis=1).sum())
    nuclei_digest = table_digest(table)   # kept with each resume point, checked by a resume
    lopsided = split_notes(table, split_by_group(table, config.val_fraction, config.split_seed)[1])
    for note in lopsided:  # also on the version's page: a curator reads it there, not in the job's log
        report(5.0, stage="loading", log=note)

    init, history, train_rows, val_rows = None, None, None, None
    fine_tuned_from = None   # the version whose network this training goes on from, if any (or UNKNOWN)
    if resume is not None:
        resume.check(table, ml_label_sets, nuclei_digest)
        init, history = resume.checkpoint, resume.history
        train_rows, val_rows = resume.rows(table)
        # A point kept before it was recorded does not say: the version then says its parent (ModelVersion).
        fine_tuned_from = resume.point.get("fine_tuned_from", UNKNOWN)
    elif parent is not None:
        checkpoint = load_checkpoint(media.local_path(parent.checkpoint_file))
        fresh = fresh_start_reason(checkpoint, ml_label_sets, config)
        init = None if fresh else checkpoint
        fine_tuned_from = None if fresh else parent.number
        report(5.0, stage="loading", log=(f"a new network, not fine-tuned from v{parent.number}: {fresh}" if fresh
                                          else f"fine-tuning v{parent.number}'s network"))

    if resume is None:
        earlier = stages_before(stages, init)
        if earlier:
            stages = earlier + stages
            report(5.0, stage="loading", log=f"stage{'s' if len(earlier) > 1 else ''} {', '.join(earlier)} run first: "
                   + ("the network is new" if init is None else f"v{parent.number}'s network went through stage "
                      f"{init.stage} only") + f", and stage {stages[len(earlier)]} goes on from the one before it")
    progress = TrainingProgress(stages, config.epochs, report)

    # The job's own scratch folder, on this host only (the stage checkpoints worth keeping are published by
    # operations.do_keep_stage_checkpoint): a retried job (its worker was killed) clears what the killed
    # attempt wrote, and a job that fails is cleared by webapp.jobs.sweep.remove_job_paths.
    remove_job_paths(job, inputs=False)
    out_dir = media.work_path(scratch_folder(job))
    shutil.rmtree(out_dir, ignore_errors=True)  # remote: a killed attempt on this host left it in the mirror
    out_dir.mkdir(parents=True)
    done_before = list(resume.point.get("done", [])) if resume else []

    def keep(stage: str, path: Path, finished: int, **unfinished) -> None:
        """Keep ``path`` as the job's resume point, ``finished`` of ``stages`` done (and ``unfinished``: the epochs
        done of the next one)."""
        operations.do_keep_stage_checkpoint(job, stage=stage, checkpoint=path, point={
            "done": done_before + stages[:finished], "remaining": stages[finished:], **unfinished,
            **({"fine_tuned_from": fine_tuned_from} if fine_tuned_from is not UNKNOWN else {}),
            "snapshot_at": snapshot_at.isoformat(), "nuclei_digest": nuclei_digest,
            "nuclei": int(len(table)), "label_sets": [s.name for s in ml_label_sets]})

    def stage_done(stage: str, path: Path | None, metrics: dict) -> None:
        # Every stage but the last is kept, so that a cancel or a failure later can resume after it.
        if path is None or stage == stages[-1]:
            return
        index = stages.index(stage)
        keep(stage, path, index + 1)
        report(5 + 90 * (index + 1) / len(stages), stage=stage, log=f"stage {stage} finished: its checkpoint is "
               "kept, so that this training can resume after it if it is cancelled or fails")

    def epoch_done(stage: str, done: int, epochs: int, path: Path) -> None:
        # The last epoch of an unfinished stage is kept as well (replacing the point before it), so that a cancel,
        # a failure or a lost worker costs at most an epoch; a finished stage is stage_done's.
        if done < epochs:
            keep(stage, path, stages.index(stage), epoch=done, epochs=epochs)

    try:
        result = train_all(table, ml_label_sets, config, stages=stages, progress=progress, should_stop=should_stop,
                           init_checkpoint=init, out_dir=out_dir, history=history, stage_done=stage_done,
                           epoch_done=epoch_done,
                           train_rows=train_rows, val_rows=val_rows)
        if result.checkpoint_path is None:   # train_all writes model.pt whenever it has an out_dir
            raise RuntimeError("the training ended without writing its model checkpoint")
        if tta and len(result.val_rows):
            report(95, stage="scoring", message="scoring the validation nuclei with test-time augmentation",
                   log=f"scoring {len(result.val_rows)} validation nuclei as the predictions will be made ({VIEWS[tta]})")
        scoring_started = time.monotonic()
        # Cancellable too: with TTA a large project's validation nuclei take minutes (8 views each, and as many
        # again for the version it replaces).
        metrics, scoring, outputs = validation_metrics(table, result, tta, should_stop)
        comparison = compared_with_parent(parent, table, result, tta, outputs, should_stop)
        scoring["seconds"] = round(time.monotonic() - scoring_started, 1)
        if comparison is not None:
            report(95, stage="publishing", log=describe_comparison(comparison))
        # The guard keeps the active version where the new one is lower beyond chance, and where the two could not
        # be compared at all (a new one could be worse in any way): it lets through only what it has checked.
        guarded = bool(job.params.get("activate_only_if_not_lower")) and parent is not None
        lower = lower_label_sets(comparison) if guarded else []
        unchecked = guarded and not (comparison or {}).get("label_sets")
        if should_stop():   # the last moment a cancel keeps the version from being published
            raise Cancelled()
        report(96, stage="publishing", message="publishing the model version", log="publishing the model version")
        version = operations.do_publish_version(
            project, job=job, checkpoint=result.checkpoint_path, config=config.portable_dict(),
            label_sets=[{"name": s.name, "classes": list(s.classes)} for s in ml_label_sets],
            trained_on=trained_on, metrics=_jsonable(metrics), data_snapshot_at=snapshot_at, parent=parent,
            history=_jsonable(result.history), training_data={
                **training_data(datasets, table, result, stages, resume), "compared_with": comparison,
                "split_notes": lopsided,
                "validation": _jsonable(scoring),
                **({"fine_tuned_from": fine_tuned_from} if fine_tuned_from is not UNKNOWN else {})},
            activate=not (lower or unchecked))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    operations.do_discard_resume_points(project)
    # An inactive version gets its predictions too: made active later, it has them for the review. The version
    # is published whatever happens here: a task queue out of reach now must not fail a training that is done.
    try:
        # Queued by the training, not by the person who started it (webapp.training.operations says who may cancel it).
        prediction_job = operations.do_start_prediction(version, queued_by=job, tta=tta)
        predictions = f"predictions follow in job {prediction_job.pk}"
    except Unavailable as exc:
        prediction_job = None
        predictions = (f"its predictions could not be queued ({exc.detail}) Once it is back, queue them from the "
                       f"project page (Queue v{version.number}'s predictions, or make the version active again)")
    if version.kept_active is not None:
        log = (f"published v{version.number} but did not make it active: v{version.kept_active.number} was made "
               f"active while it trained (it went on from v{parent.number if parent else '—'}), and stays active "
               f"(make v{version.number} active on its page if you want it)")
    elif lower:
        log = (f"published v{version.number} but did not make it active: it is lower than v{parent.number} on "
               f"{', '.join(lower)} (the retraining policy keeps the active version then); v{parent.number} stays "
               f"active")
    elif unchecked:
        why = (comparison or {}).get("skipped") or "no validation nucleus or label set in common"
        log = (f"published v{version.number} but did not make it active: it could not be compared with "
               f"v{parent.number} ({why}), and the retraining policy makes a version active only once it has "
               f"checked it is not lower; v{parent.number} stays active (make v{version.number} active on its page "
               f"if you want it)")
    else:
        log = f"published v{version.number}"
    report(100, stage="publishing", log=f"{log}; {predictions}")
    return {"model_version": version.number, "model_version_id": version.pk, "active": version.is_active,
            "stages": stages, "trained_on": trained_on, "prediction_job": prediction_job.pk if prediction_job else None,
            "compared_with": comparison, "metrics": summary(version.metrics)}


def run_prediction(job: Job, report: Report, should_stop: ShouldStop) -> dict:
    """Store, for every nucleus and every label set, the active model's prediction and uncertainty.

    ``params["image"]``: one whole-slide image only (webapp.training.operations.do_start_slide_prediction);
    ``params["dataset"]``: the tile images of one dataset only (operations.do_predict_dataset).
    A slide's nuclei are streamed through the model from the slide, a batch at a time. ``params["tta"]``:
    test-time augmentation, for that slide, or else for the tile images (the slides among them get the
    slides' default). A job queued before the parameter existed gets the defaults."""
    version = ModelVersion.objects.select_related("project").get(pk=job.params["model_version"])
    slide_job = bool(job.params.get("image"))
    tta = bool(job.params.get("tta", TTA_DEFAULT_SLIDES if slide_job else TTA_DEFAULT_TILES))
    views = VIEWS[tta]
    checkpoint = load_checkpoint(media.local_path(version.checkpoint_file))
    model = checkpoint.model.eval()
    label_set_rows = {row.name: row for row, _ in project_label_sets(version.project)}
    if slide_job:
        image = Image.objects.filter(pk=job.params["image"], project=version.project).first()
        if image is None or not image.is_slide:
            raise ValueError(f"the slide {quoted(job.params.get('image_name') or job.params['image'])} is gone "
                             "(its dataset was deleted)")
        result = predict_slide(version, model, image, label_set_rows, report, should_stop, start=0, span=100,
                               tta=tta)
        report(100.0, stage="slide", nuclei_done=result["nuclei"], nuclei_total=result["nuclei"],
               nuclei_per_s=result["nuclei_per_s"], region={"y": image.height, "height": image.height},
               log=f"{result['predictions']} predictions stored for the {result['nuclei']} nuclei of slide "
                   f"{image.name} in {result['seconds']:.1f} s ({result['nuclei_per_s'] or 0:.0f} nuclei/s, "
                   f"model v{version.number}, {views})")
        bulk.analyze_after_commit(Prediction)
        return {"model_version": version.number, "image": image.pk, "tta": tta, **result}
    images = Image.objects.filter(project=version.project)
    if job.params.get("dataset"):   # a dataset gone since is no error: nothing is left to predict
        images = images.filter(dataset_id=job.params["dataset"], slide_file="")
    elif job.params.get("missing"):   # the tile images it has no predictions of (operations.do_predict_missing)
        images = operations.images_without_predictions(version)
    images = list(images.order_by("id"))
    stored = 0
    unreadable: list[str] = []
    for number, image in enumerate(images, start=1):
        if image.is_slide:
            try:
                stored += predict_slide(version, model, image, label_set_rows, report, should_stop,
                                        start=100.0 * (number - 1) / len(images), span=100.0 / len(images),
                                        tta=TTA_DEFAULT_SLIDES)["predictions"]
            except SlideError as exc:
                # A slide this worker cannot read (moved away, SLIDES_ROOT not set here) must not cost the
                # project every other image's predictions: it is named in the log and left out.
                unreadable.append(str(exc))
            continue
        instance_map = load_mask(image)
        crops, geometry = model.crop_spec.cut(load_rgb(image), instance_map)
        nucleus_ids = dict(Nucleus.objects.filter(image=image).values_list("instance_id", "id"))
        if len(geometry.ids) == 0:
            continue
        rows = prediction_rows(version, label_set_rows, [nucleus_ids[i] for i in geometry.ids.tolist()],
                               predict(model, crops, tta=tta))
        stored += operations.do_store_predictions(version, rows, replace=True)
        report(100.0 * number / len(images), message=f"image {number}/{len(images)}")
        if should_stop():
            raise Cancelled()
    of_dataset = (f" of dataset {quoted(job.params.get('dataset_name'))}" if job.params.get("dataset")
                  else " that had none" if job.params.get("missing") else "")
    left_out = (f"; {len(unreadable)} slide{'s' if len(unreadable) != 1 else ''} could not be read and "
                f"{'have' if len(unreadable) != 1 else 'has'} no predictions of this version: {'; '.join(unreadable)}"
                if unreadable else "")
    report(100.0, message=f"image {len(images)}/{len(images)}",
           log=f"{stored} predictions stored for the {len(images) - len(unreadable)} images{of_dataset} "
               f"(model v{version.number}; tiles: {views}){left_out}")
    bulk.analyze_after_commit(Prediction)  # the review queue's index scans need fresh statistics
    return {"model_version": version.number, "predictions": stored, "tta": tta, "unreadable_slides": unreadable}


SLIDE_BATCH = 2048  # nuclei read from the database at a time, and predictions stored per transaction


def slide_nuclei_batches(image: Image, batch: int = SLIDE_BATCH):
    """The nuclei of a slide from the database as (nucleus ids, SlideNucleus list) batches, in reading order
    (top to bottom, then left to right: the (image, y0, x0) index), so that consecutive batches read
    neighbouring regions of the slide. Keyset pagination: each batch is one index range scan."""
    from django.db.models import Q

    from mlcore.slide_nuclei import SlideNucleus

    after = None
    while True:
        rows = Nucleus.objects.filter(image=image)
        if after is not None:
            y, x, pk = after
            rows = rows.filter(Q(y0__gt=y) | Q(y0=y, x0__gt=x) | Q(y0=y, x0=x, id__gt=pk))
        rows = list(rows.order_by("y0", "x0", "id").values_list(
            "id", "x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area", "outline")[:batch])
        if not rows:
            return
        after = (rows[-1][2], rows[-1][1], rows[-1][0])
        yield [r[0] for r in rows], [
            SlideNucleus(outline=np.asarray(outline, dtype=np.int32).reshape(-1, 2), bbox=(x0, y0, x1, y1),
                         centroid=(cx, cy), area=area, class_name=None, measurements={})
            for _, x0, y0, x1, y1, cx, cy, area, outline in rows]


class _NucleusIds:
    """The database's nuclei as one stream for infer_slide, remembering the id of each position handed out
    until its prediction comes back (infer_slide regroups nuclei by region and gives stream positions):
    memory holds the ids of the nuclei in flight only."""

    def __init__(self, image: Image):
        self.image = image
        self.ids: dict[int, int] = {}

    def __iter__(self):
        position = 0
        for ids, nuclei in slide_nuclei_batches(self.image):
            for nucleus_id, nucleus in zip(ids, nuclei):
                self.ids[position] = nucleus_id
                position += 1
                yield nucleus

    def take(self, indices) -> list[int]:
        return [self.ids.pop(int(i)) for i in indices]


def prediction_rows(version: ModelVersion, label_set_rows: dict, nucleus_ids, predictions: dict) -> list:
    rows = []
    for name, pred in predictions.items():
        label_set = label_set_rows.get(name)
        if label_set is None:
            continue  # a label set removed since training
        for row, nucleus_id in enumerate(nucleus_ids):
            rows.append(Prediction(
                nucleus_id=nucleus_id, label_set=label_set, model_version=version,
                class_index=int(pred.labels[row]), probability=float(pred.probs[row, pred.labels[row]]),
                base_probs=np.round(pred.base_probs[row], 5).tolist(),
                mlp_probs=np.round(pred.mlp_probs[row], 5).tolist() if pred.mlp_probs is not None else None,
                **{k: float(pred.uncertainty[k][row]) for k in
                   ("least_confidence", "margin", "entropy", "disagreement")}))
    return rows


def predict_slide(version: ModelVersion, model, image: Image, label_set_rows: dict, report: Report,
                  should_stop: ShouldStop, *, start: float = 0.0, span: float = 100.0,
                  tta: bool = TTA_DEFAULT_SLIDES) -> dict:
    """Classify every nucleus of a slide image with :func:`mlcore.infer.infer_slide`: nuclei streamed from
    the database in reading order, their crops cut from regions of the slide read at the model's scale,
    predictions stored every :data:`SLIDE_BATCH` nuclei. Memory holds a few batches whatever the slide's
    size. Progress by region (the last region read, and how far down the slide) and in nuclei/s."""
    from mlcore.infer import infer_slide
    from webapp.datasets.slides import open_image_slide

    slide = open_image_slide(image)
    total = image.nucleus_count or Nucleus.objects.filter(image=image).count()
    done = stored = 0
    started = time.monotonic()
    # A version's predictions are replaced, not added twice (a slide classified again by the same version).
    Prediction.objects.filter(model_version=version, nucleus__image=image).delete()
    stream = _NucleusIds(image)
    pending: list = []

    def store() -> int:
        rows = list(pending)
        pending.clear()
        return operations.do_store_predictions(version, rows) if rows else 0

    for batch in infer_slide(model, slide, stream, batch_size=512, tta=tta):
        pending += prediction_rows(version, label_set_rows, stream.take(batch.indices), batch.predictions)
        done += len(batch.indices)
        if len(pending) >= SLIDE_BATCH * max(1, len(label_set_rows)):
            stored += store()
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        x, y, width, height = (int(v) for v in batch.region)
        report(start + span * done / max(total, 1), stage="slide",
               message=f"slide {image.name}: {done:,}/{total:,} nuclei, region ({x}, {y}, {width} x {height}) of "
                       f"{image.width:,} x {image.height:,} px, {rate:.0f} nuclei/s",
               nuclei_done=done, nuclei_total=total, nuclei_per_s=round(rate, 1),
               region={"x": x, "y": y, "width": width, "height_read": height, "height": image.height},
               eta_s=(total - done) / rate if rate > 0 else None)
        if should_stop():
            raise Cancelled()
    stored += store()
    seconds = time.monotonic() - started
    return {"nuclei": done, "predictions": stored, "seconds": round(seconds, 3),
            "nuclei_per_s": round(done / seconds, 1) if seconds > 0 else None, "slide_mpp": image.mpp,
            "model_mpp": getattr(model, "mpp", None)}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_inference(job: Job, report: Report, should_stop: ShouldStop) -> dict:
    """Classify the nuclei of an uploaded image with the active model; write the method's outputs."""
    from mlcore.infer import infer_image, read_mask, write_outputs
    from mlcore.readers import read_rgb

    version = ModelVersion.objects.get(pk=job.params["model_version"])
    name = media.clean_name(job.params["folder"])
    image_path = media.local_path(f"{name}/{media.clean_name(job.params['image'])}")
    uploaded = job.params.get("uploaded") or {}
    try:
        image = read_rgb(image_path)
    except DataError as exc:
        raise DataError(uploaded.get("image", image_path.name), exc.problem) from None
    try:
        instance_map = read_mask(media.local_path(f"{name}/{media.clean_name(job.params['mask'])}"), image.shape[:2])
    except DataError as exc:  # stored as "<image>-mask.<suffix>": named as the user's file was
        raise DataError(uploaded.get("mask", Path(exc.path or "mask").name), exc.problem) from None
    tta = bool(job.params.get("tta", TTA_DEFAULT_TILES))
    report(20, message=f"classifying nuclei ({VIEWS[tta]})")
    model = load_checkpoint(media.local_path(version.checkpoint_file)).model.eval()
    result = infer_image(model, image, instance_map, tta=tta, should_stop=should_stop)
    if should_stop():
        raise Cancelled()
    report(80, message="writing outputs")
    out = f"{name}/out"
    shutil.rmtree(media.work_path(out), ignore_errors=True)  # what a killed attempt on this host left
    written = write_outputs(media.work_path(out), image_path.stem, image, instance_map, result, model,
                            image_path=image_path.name)
    media.publish(out)  # in the storage before the job's result names the files
    files = [media.name_of(p) for p in written]
    if media.is_remote():
        # The job's files are read through the storage from now on: this host keeps no copy of them.
        shutil.rmtree(media.work_path(name), ignore_errors=True)
    nuclei = int(len(result.geometry.ids))
    report(100, log=f"{nuclei} nuclei of {uploaded.get('image', image_path.name)} classified by model "
                    f"v{version.number} ({VIEWS[tta]}); {len(files)} files written")
    return {"model_version": version.number, "nuclei": nuclei, "files": files, "tta": tta}
