"""How long a training of a project would take, before it starts: its size, the schedule, a measured speed.

The speed comes, in this order, from

1. the recent finished trainings with the same backbone and crops on this server: the throughput their epochs
   recorded (the workers' real speed, under their real load), or
2. a probe: a few batches of that backbone timed on this (web) server once, cached for a week. The
   workers may be faster (a GPU) or busier; the page says which source it used.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from django.core.cache import cache
from django.utils import timezone

from mlcore.config import MACHINE_FIELDS, STAGES, TrainConfig
from mlcore.crops import CropSpec
from mlcore.estimate import describe_rule, estimate_seconds, measure_speed, speed_from_history

from . import operations
from .models import ModelVersion
from .queries import active_version

logger = logging.getLogger(__name__)
RECENT_TRAININGS = 3
PROBE_CACHE_SECONDS = 7 * 24 * 3600


# The crop fields that set a training's pace: size and channels (a wider view's colours and a mask channel are
# more input and more augmentation) and the window cut. Stain normalisation is done once, before the epochs.
PACE_FIELDS = ("crop_size", "crop_mask", "crop_context", "crop_context_view")


def crop_input(config: dict, stain_normalisation: str = "none") -> CropSpec:
    """The crops a saved config trained on, as far as the pace goes (its other fields are not read)."""
    paced = TrainConfig.from_saved({k: v for k, v in config.items() if k in PACE_FIELDS}).crop_spec
    return replace(paced, stain_normalisation=stain_normalisation)


def recorded_speed(backbone: str, crop: CropSpec) -> dict | None:
    """The mean speed of the last few finished trainings of this backbone and these crops (any project: it is the
    machine's). Trainings of other crops do not count: a wider view trained about a fifth slower."""
    speeds = []
    for config, history in (ModelVersion.objects.filter(config__backbone=backbone).exclude(history=[])
                            .order_by("-created_at").values_list("config", "history")[:10 * RECENT_TRAININGS]):
        speed = speed_from_history(history) if crop_input(config, crop.stain_normalisation) == crop else None
        if speed:
            speeds.append(speed)
        if len(speeds) == RECENT_TRAININGS:
            break
    if not speeds:
        return None
    return {key: sum(s[key] for s in speeds) / len(speeds) for key in speeds[0]} | {
        "source": "recorded", "trainings": len(speeds),
        "text": (f"the speed of the last {len(speeds)} finished training{'s' if len(speeds) != 1 else ''} "
                 f"with the {backbone} backbone and these crops on this server")}


def probed_speed(backbone: str, crop: CropSpec, stain_jitter: float = 0.0) -> dict:
    """A few batches timed here, once per backbone and input (cached; measured again when the cache is gone)."""
    key = f"training-speed-probe:{backbone}:{crop.size}:{crop.channels}:{stain_jitter > 0}"
    try:
        cached = cache.get(key)
    except Exception:  # the cache is Redis: an estimate must not fail with it
        cached = None
    if cached is None:
        cached = {**measure_speed(backbone, crop_size=crop.size, channels=crop.channels, stain_jitter=stain_jitter),
                  "measured_at": timezone.now().isoformat()}
        try:
            cache.set(key, cached, PROBE_CACHE_SECONDS)
        except Exception:
            logger.warning("could not cache the training speed probe", exc_info=True)
    return {**cached, "source": "probe",
            "text": (f"a few batches of the {backbone} backbone timed on this web server's CPU "
                     f"(no training with it has finished here yet; measured {cached['measured_at'][:16]} UTC)")}


def training_speed(backbone: str, crop: CropSpec = CropSpec(), stain_jitter: float = 0.0) -> dict:
    return recorded_speed(backbone, crop) or probed_speed(backbone, crop, stain_jitter)


def training_estimate(project, options: dict, *, resume_point: dict | None = None) -> dict:
    """The schedule a training with ``options`` would run (defaults filled in as do_start_training fills them)
    and its estimated duration, in seconds per stage and in total."""
    size = operations.data_size(project)
    defaults = operations.default_training_options(project, options.get("batch_size"), size)
    active = active_version(project)
    base = (TrainConfig.from_saved({k: v for k, v in active.config.items() if k not in MACHINE_FIELDS}) if active
            else TrainConfig())
    backbone = options.get("backbone") or base.backbone
    epochs = options.get("epochs") or defaults["epochs"]
    samples_per_epoch = options.get("samples_per_epoch") or defaults["samples_per_epoch"]
    stages = list(options.get("stages") or STAGES)
    # The label sets the training learns (a label set without a labelled nucleus is left out, and one labelled on
    # slides only where SLIDE_TRAINING_MAX_NUCLEI is 0), not every label set of the project; a resume's are those
    # its stopped stage learnt (operations.resume_point has checked them).
    learnt = (resume_point or {}).get("label_sets")
    label_sets = len(learnt) if learnt is not None else len(operations.labelled_label_sets(project))
    if label_sets < 2:
        stages = ["sparse"]  # as the training itself does
    stage_epochs = {}
    if resume_point is not None:
        stages = list(resume_point["remaining"])
        if "epoch" in resume_point:   # an unfinished stage goes on at its next epoch
            stage_epochs[stages[0]] = max(0, int(resume_point["epochs"]) - int(resume_point["epoch"]))
    crop = replace(base.crop_spec, context_view=options.get("crop_context_view", base.crop_context_view))
    # An ensemble trains each of its models in turn, every stage of each as long as one model's.
    models = int(options.get("ensemble") or base.ensemble)
    speed = training_speed(backbone, crop, options.get("stain_jitter", base.stain_jitter))
    estimate = estimate_seconds(nuclei=size["nuclei"], labelled=size["labelled"], stages=stages,
                                epochs={stage: stage_epochs.get(stage, epochs) for stage in stages},
                                samples_per_epoch=samples_per_epoch,
                                train_samples_per_s=speed["train_samples_per_s"],
                                infer_samples_per_s=speed["infer_samples_per_s"], val_fraction=base.val_fraction,
                                correlation_views=base.correlation_views)
    return {
        "nuclei": size["nuclei"], "labelled_nuclei": size["labelled"], "label_sets": label_sets,
        "stages": stages, "epochs": epochs, "samples_per_epoch": samples_per_epoch, "backbone": backbone,
        "defaults": {**defaults, "rule": describe_rule()},
        "models": models,
        "seconds": round(models * estimate["total"], 1),
        "per_stage": {stage: round(models * seconds, 1) for stage, seconds in estimate["per_stage"].items()},
        "speed": {"train_samples_per_s": round(speed["train_samples_per_s"], 1),
                  "infer_samples_per_s": round(speed["infer_samples_per_s"], 1),
                  "source": speed["source"], "text": speed["text"]},
        "excludes": ("loading the images and cutting their crops, a slide's labelled nuclei's too (cached after "
                     "a project's first training)"),
    }
