"""What the project page shows about training: the live job, versions, metrics across versions, policy."""

from __future__ import annotations

from webapp.jobs.models import Job
from webapp.projects.access import can
from webapp.projects.models import Role

from .models import ModelVersion, RetrainPolicy
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
            points.append({"x": round(x, 1), "y": round(y, 1), "value": value, "number": version.number})
        series.append({"name": name, "color": colors.get(name, "#6a2c91"),
                       "polyline": " ".join(f"{p['x']},{p['y']}" for p in points), "points": points})
    ticks = [{"x": PLOT_PAD + i * step, "label": f"v{v.number}"} for i, v in enumerate(versions)]
    grid = [{"y": PLOT_HEIGHT - PLOT_PAD - f * (PLOT_HEIGHT - 2 * PLOT_PAD), "label": f"{f:.1f}"}
            for f in (0, 0.25, 0.5, 0.75, 1.0)]
    return {"series": series, "ticks": ticks, "grid": grid, "width": PLOT_WIDTH, "height": PLOT_HEIGHT,
            "pad": PLOT_PAD}


PALETTE = ["#e6194b", "#3cb44b", "#0082c8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#008080"]


def training_panel_context(project, user) -> dict:
    versions = list(ModelVersion.objects.filter(project=project).order_by("number"))
    label_set_names = sorted({name for v in versions for name in v.metrics})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(label_set_names)}
    training_job = (Job.objects.filter(project=project, kind=Job.Kind.TRAIN, state__in=ACTIVE_STATES)
                    .order_by("-id").first())
    last_jobs = Job.objects.filter(project=project, kind__in=[Job.Kind.TRAIN, Job.Kind.PREDICT, Job.Kind.INFER]
                                   ).order_by("-id")[:5]
    from mlcore.backbones import list_backbones
    from mlcore.config import TrainConfig

    active = next((v for v in versions if v.is_active), None)

    return {
        "versions": list(reversed(versions)),
        "active_version": active,
        "training_job": training_job,
        "training_jobs": last_jobs,
        "can_train": can(user, project, Role.CURATOR),
        "can_infer": can(user, project, Role.REVIEWER),
        "policy": RetrainPolicy.objects.filter(project=project).first(),
        "new_reviews": new_reviews_since_active(project),
        "plot": metrics_plot(versions, colors),
        "backbones": list_backbones(),
        "default_backbone": (active.config.get("backbone") if active else None) or TrainConfig().backbone,
    }
