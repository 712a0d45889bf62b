"""What the project page shows about training: the live job, versions, metrics across versions, policy."""

from __future__ import annotations

from webapp.core.domain_errors import Conflict
from webapp.jobs.models import Job
from webapp.projects.access import can
from webapp.projects.models import Role

from .comparison import comparison_with_replaced
from .models import ModelVersion, Prediction, RetrainPolicy
from .operations import ACTIVE_STATES, new_reviews_since_active

PLOT_WIDTH, PLOT_HEIGHT, PLOT_PAD = 560, 200, 30


def metrics_plot(versions: list[ModelVersion], colors: dict[str, str]) -> dict:
    """Macro-F1 per label set across versions, as SVG polylines (server-side, no chart library)."""
    names = sorted({name for v in versions for name in v.metrics if isinstance(v.metrics[name], dict)})
    if not versions:
        return {"series": [], "width": PLOT_WIDTH, "height": PLOT_HEIGHT}
    step = (PLOT_WIDTH - 2 * PLOT_PAD) / max(1, len(versions) - 1)
    series = []
    for name in names:
        points = []
        for i, version in enumerate(versions):
            value = (version.metrics.get(name) or {}).get("macro_f1")
            if value is None:
                continue
            x = PLOT_PAD + i * step
            y = PLOT_HEIGHT - PLOT_PAD - value * (PLOT_HEIGHT - 2 * PLOT_PAD)
            points.append({"x": round(x, 1), "y": round(y, 1), "value": value, "number": version.number,
                           "tta": bool(version.metrics[name].get("tta"))})
        series.append({"name": name, "color": colors.get(name, "#6a2c91"),
                       "polyline": " ".join(f"{p['x']},{p['y']}" for p in points), "points": points})
    ticks = [{"x": PLOT_PAD + i * step, "label": f"v{v.number}"} for i, v in enumerate(versions)]
    # Gridlines where their labels say: every 0.2 (quarters labelled to one decimal read 0.2 and 0.8).
    grid = [{"y": round(PLOT_HEIGHT - PLOT_PAD - f / 10 * (PLOT_HEIGHT - 2 * PLOT_PAD), 1), "label": f"{f / 10:.1f}"}
            for f in range(0, 11, 2)]
    return {"series": series, "ticks": ticks, "grid": grid, "width": PLOT_WIDTH, "height": PLOT_HEIGHT,
            "pad": PLOT_PAD}


def version_metrics(version: ModelVersion, project_classes: dict[str, list[str]]) -> list[dict]:
    """A version's validation metrics per label set, its classes in the model's output order (the stored
    JSON keeps no key order): the per-class rows, and the confusion matrix with its class names."""
    model_classes = {item.get("name"): list(item.get("classes") or []) for item in version.label_sets
                     if isinstance(item, dict)}
    entries = []
    for name, metrics in version.metrics.items():
        if not isinstance(metrics, dict):
            continue
        per_class = metrics.get("per_class") or {}
        confusion = metrics.get("confusion") or []
        classes = model_classes.get(name) or project_classes.get(name) or list(per_class)
        if len(classes) != len(confusion):
            classes = [classes[i] if i < len(classes) else f"class {i}" for i in range(len(confusion))]
        entries.append({"name": name, "metrics": metrics, "classes": classes,
                        "per_class": [(c, per_class[c]) for c in classes if c in per_class],
                        "confusion": list(zip(classes, confusion))})
    order = list(model_classes)
    return sorted(entries, key=lambda e: (order.index(e["name"]) if e["name"] in order else len(order), e["name"]))


# Lines on the white plot, one per label set: Okabe & Ito's colours that keep 3:1 against white first,
# apart for colour-blind eyes too (tests/test_colour_palettes.py).
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#000000", "#e69f00", "#56b4e9"]


def without_predictions(version: ModelVersion) -> int:
    """How many of the project's tile images the version has no predictions of, while none are on their way:
    all of them where its training could not queue them (the task queue was out of reach as it ended), the
    rest where its last prediction job was cancelled or failed. 0 otherwise. Asked on every view of the
    project page, so the images are counted only where one of those is the case."""
    from webapp.training.operations import images_without_predictions, tile_prediction_jobs

    jobs = tile_prediction_jobs(version)
    if jobs.filter(state__in=ACTIVE_STATES).exists():
        return 0
    last = jobs.order_by("-id").first()
    if Prediction.objects.filter(model_version=version).exists() and (
            last is None or last.state not in (Job.State.FAILED, Job.State.CANCELLED)):
        return 0
    return images_without_predictions(version).count()


def training_panel_context(project, user) -> dict:
    versions = list(ModelVersion.objects.filter(project=project).defer("history", "training_data").order_by("number"))
    label_set_names = sorted({name for v in versions for name in v.metrics})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(label_set_names)}
    training_job = (Job.objects.filter(project=project, kind=Job.Kind.TRAIN, state__in=ACTIVE_STATES)
                    .order_by("-id").first())
    last_jobs = Job.objects.filter(project=project, kind__in=[Job.Kind.TRAIN, Job.Kind.PREDICT, Job.Kind.INFER]
                                   ).order_by("-id")[:5]
    from mlcore.backbones import backbone_choices
    from mlcore.config import MAX_ENSEMBLE, TrainConfig

    active = next((v for v in versions if v.is_active), None)
    from webapp.datasets.models import LabelSet

    project_classes = {label_set.name: label_set.class_names for label_set in
                       LabelSet.objects.filter(project=project).prefetch_related("classes")}
    for version in versions:
        version.metric_entries = version_metrics(version, project_classes)

    return {
        "versions": list(reversed(versions)),
        # The table's note on "TTA", shown once where a version was scored with it.
        "versions_tta": any(entry["metrics"].get("tta") for version in versions for entry in version.metric_entries),
        "active_version": active,
        # The newest version against the one it replaced: a warning where it is lower, active or not.
        "newest_version": versions[-1] if versions else None,
        "newest_comparison": comparison_with_replaced(versions[-1]) if versions else None,
        "active_without_predictions": active is not None and without_predictions(active),
        "training_job": training_job,
        "training_jobs": last_jobs,
        "can_train": can(user, project, Role.CURATOR),
        "can_infer": can(user, project, Role.REVIEWER),
        "policy": RetrainPolicy.objects.filter(project=project).first(),
        "new_reviews": new_reviews_since_active(project),
        "plot": metrics_plot(versions, colors),
        "backbones": backbone_choices(),
        "default_backbone": (active.config.get("backbone") if active else None) or TrainConfig().backbone,
        # A new training inherits the active version's config, so the form shows what it would get.
        # Read, not `or`-ed: an active version trained with stain jitter 0 (off) shows 0, not the default.
        "default_stain_jitter": (active.config if active else {}).get("stain_jitter", TrainConfig().stain_jitter),
        "default_grayscale": (active.config if active else {}).get("grayscale", TrainConfig().grayscale),
        "default_context_view": (TrainConfig.saved(active.config) if active else {}).get(
            "crop_context_view", TrainConfig().crop_context_view),
        "default_ensemble": (active.config if active else {}).get("ensemble", TrainConfig().ensemble),
        "max_ensemble": MAX_ENSEMBLE,
        **training_form_context(project),
    }


def training_form_context(project) -> dict:
    """The train form's defaults (the rule's, for this project's size), the trainings that can be resumed,
    and the retraining policy's schedule as the form shows it."""
    from mlcore.config import MAX_SAMPLES_PER_EPOCH, STAGE_NUMBER, STAGES, TTA_DEFAULT_SLIDES, TTA_DEFAULT_TILES
    from mlcore.estimate import describe_rule

    from .operations import data_size, default_training_options, refuse_without_training_data
    from .schedule import describe_schedule

    try:  # the form says up front what a start would be refused for (an import still running, no data)
        refuse_without_training_data(project)
        not_ready, waits_for = None, None
    except Conflict as exc:
        not_ready, waits_for = exc.detail, exc.extra.get("job_id")   # the import the page follows (training.js)

    resumable = []
    for job in (Job.objects.filter(project=project, kind=Job.Kind.TRAIN, result__has_key="resume",
                                   state__in=(Job.State.CANCELLED, Job.State.FAILED)).order_by("-id")[:3]):
        point = job.result["resume"]
        resumable.append({"job": job, "stage": point.get("stage"), "stage_number": STAGE_NUMBER.get(point.get("stage")),
                          "remaining": point.get("remaining", []), "epoch": point.get("epoch"),
                          "epochs": point.get("epochs")})
    policy = RetrainPolicy.objects.filter(project=project).first()
    policy_options = (policy.options if policy else {}) or {}
    project_size = data_size(project)
    from django.conf import settings

    return {
        "training_defaults": default_training_options(project, size=project_size),
        "training_limits": {"samples_per_epoch": MAX_SAMPLES_PER_EPOCH},     # the API's own (TrainRequestSerializer)
        "policy_limits": {"min_new_reviews": RetrainPolicy.MAX_MIN_NEW_REVIEWS,
                          "check_every_minutes": RetrainPolicy.MAX_CHECK_EVERY_MINUTES},
        "training_not_ready": not_ready,
        "training_waits_for": waits_for,
        "training_rule": describe_rule(),
        "project_size": project_size,
        "resumable": resumable,
        "all_stages": [(stage, STAGE_NUMBER[stage]) for stage in STAGES],
        "policy_options": policy_options,
        "policy_stages": policy_options.get("stages") or list(STAGES),
        "policy_epochs": policy_options.get("epochs"),
        "policy_schedule_text": describe_schedule(policy),
        "schedule_time_zone": settings.CELERY_TIMEZONE,
        "tta_default_tiles": TTA_DEFAULT_TILES,
        "tta_default_slides": TTA_DEFAULT_SLIDES,
    }
