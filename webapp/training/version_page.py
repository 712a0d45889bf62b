"""A model version's page: its training curves per stage, its validation per label set, what it was trained on.

The curves are server-rendered SVG (no chart library, nothing for the page's script to build): per stage,
the mean training loss of each epoch and the validation macro-F1 of each label set after each epoch
(mlcore records both in the version's history).
"""

from __future__ import annotations

import math

from mlcore.config import STAGE_NUMBER, STAGES

from .models import ModelVersion
from .comparison import comparison_with_replaced
from .pages import PALETTE, version_metrics

CHART_WIDTH, CHART_HEIGHT = 340, 180
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 42, 12, 12, 30
STAGE_TITLES = {"sparse": "Stage 1: sparse training", "correlation": "Stage 2: label correlation",
                "completion": "Stage 3: cross training"}
CONFIG_ROWS = [  # (config key, what it is), in the order a person reads them
    ("backbone", "backbone"), ("backbone_kwargs", "backbone options"), ("ensemble", "models averaged (seeds)"), ("crop_size", "crop size (px)"),
    ("crop_mask", "nucleus mask channel"), ("crop_context", "crop context (x the crop size)"),
    ("crop_context_view", "wider context view (x shrunk, 0 = none)"),
    ("epochs", "epochs per stage"), ("samples_per_epoch", "draws per epoch"), ("batch_size", "batch size"),
    ("lr", "learning rate per stage"), ("lr_schedule", "learning-rate schedule"), ("optimizer", "optimizer"),
    ("weight_decay", "weight decay"),
    ("grad_clip", "gradient clip"), ("dataset_power", "dataset sampling power"), ("class_power", "class sampling power"),
    ("completion_class_power", "stage 3 class sampling power"), ("threshold", "pseudo-label threshold"),
    ("pseudo_weight", "pseudo-label weight"), ("completion_weighting", "stage 3 weighting"),
    ("correlation_views", "stage 2 views"), ("jitter", "colour jitter"), ("stain_jitter", "HED stain jitter"),
    ("context_view_dropout", "context view dropout"), ("scale_jitter", "scale jitter"), ("blur_jitter", "blur jitter (px)"),
    ("grayscale", "grey crops (share)"),
    ("stain_normalisation", "stain normalisation"),
    ("val_fraction", "validation fraction"),
    ("split_seed", "split seed"), ("seed", "seed"), ("device", "device"),
]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above value (a loss axis' top)."""
    if not value or not math.isfinite(value) or value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10 ** exponent
        if top >= value * (1 - 1e-9):
            return top
    return 10 ** (exponent + 1)


def _format(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"


def line_chart(series: list[dict], epochs: list[int], y_top: float, y_label: str) -> dict:
    """Positions for one chart: ``series`` [{name, color, values (one per epoch, None for none)}] over
    ``epochs`` (x) from 0 to ``y_top`` (y), with five labelled gridlines and the epochs labelled."""
    inner_w = CHART_WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = CHART_HEIGHT - PAD_TOP - PAD_BOTTOM
    span = max(1, len(epochs) - 1)

    def x(i: int) -> float:
        return round(PAD_LEFT + (i / span * inner_w if len(epochs) > 1 else inner_w / 2), 1)

    def y(value: float) -> float:
        return round(PAD_TOP + inner_h - min(max(value / y_top, 0.0), 1.0) * inner_h, 1)

    drawn = []
    for item in series:
        points = [{"x": x(i), "y": y(v), "value": v, "epoch": epochs[i]}
                  for i, v in enumerate(item["values"]) if v is not None and math.isfinite(v)]
        drawn.append({"name": item["name"], "color": item["color"], "points": points,
                      "polyline": " ".join(f"{p['x']},{p['y']}" for p in points)})
    grid = [{"y": y(y_top * k / 4), "label": _format(y_top * k / 4)} for k in range(5)]
    every = max(1, math.ceil(len(epochs) / 10))  # at most about ten epoch labels
    ticks = [{"x": x(i), "label": str(epoch)} for i, epoch in enumerate(epochs) if i % every == 0 or i == len(epochs) - 1]
    return {"series": drawn, "grid": grid, "ticks": ticks, "width": CHART_WIDTH, "height": CHART_HEIGHT,
            "left": PAD_LEFT, "right": CHART_WIDTH - PAD_RIGHT, "bottom": CHART_HEIGHT - PAD_BOTTOM,
            "y_label": y_label}


def stage_curves(history: list[dict], label_set_names: list[str]) -> list[dict]:
    """One entry per stage that ran: its epochs, a loss chart and a validation macro-F1 chart. An ensemble's
    history has each model's epochs (``member``): the loss chart has a line per model, the rest is the first's."""
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(label_set_names)}
    stages = []
    for stage in STAGES:
        all_entries = [h for h in history if isinstance(h, dict) and h.get("stage") == stage]
        if not all_entries:
            continue
        by_member: dict[int, list[dict]] = {}
        for h in all_entries:   # a single model's entries have no member: model 1
            by_member.setdefault(int(h.get("member") or 1), []).append(h)
        members = sorted(by_member)
        entries = by_member[members[0]]
        epochs = [int(h.get("epoch") or i + 1) for i, h in enumerate(entries)]
        losses = {m: [h.get("loss") for h in by_member[m]] for m in members}
        finite = [v for values in losses.values() for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        loss_chart = line_chart([{"name": "training loss" + (f", model {m}" if len(members) > 1 else ""),
                                  "color": "#6a2c91" if index == 0 else PALETTE[index % len(PALETTE)],
                                  "values": values[:len(epochs)]}
                                 for index, (m, values) in enumerate(losses.items())], epochs,
                                _nice_ceiling(max(finite, default=1.0)), "loss")
        names = [n for n in label_set_names if any(n in (h.get("val_macro_f1") or {}) for h in entries)]
        f1_chart = line_chart([{"name": name, "color": colors[name],
                                "values": [(h.get("val_macro_f1") or {}).get(name) for h in entries]}
                               for name in names], epochs, 1.0, "validation macro-F1")
        seconds = sum(float(h.get("seconds") or 0) for h in all_entries)
        stages.append({"stage": stage, "number": STAGE_NUMBER[stage], "title": STAGE_TITLES[stage],
                       "epochs": len(entries), "seconds": round(seconds), "names": names, "models": len(members),
                       "charts": [{**loss_chart, "kind": "loss"}, *([{**f1_chart, "kind": "f1"}] if names else [])],
                       "validated": bool(names),
                       "rows": [{"epoch": e, "loss": h.get("loss"), "f1": [(n, (h.get("val_macro_f1") or {}).get(n))
                                                                          for n in names],
                                 "samples_per_s": h.get("samples_per_s")} for e, h in zip(epochs, entries)]})
    return stages


def _display(value) -> str:
    """A config value as text: per-stage dicts as "sparse 10 · correlation 10", nothing as a dash."""
    if isinstance(value, dict):  # stages in their order (the database keeps no key order)
        keys = sorted(value, key=lambda k: (STAGES.index(k) if k in STAGES else len(STAGES), k))
        return " · ".join(f"{k} {_display(value[k])}" for k in keys) if value else "—"
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def version_page_context(version: ModelVersion) -> dict:
    from webapp.datasets.models import LabelSet

    project = version.project
    model_sets = [item for item in version.label_sets if isinstance(item, dict)]
    label_set_names = [item.get("name") for item in model_sets]
    project_classes = {label_set.name: label_set.class_names for label_set in
                       LabelSet.objects.filter(project=project).prefetch_related("classes")}
    config = version.config or {}
    # "auto" is a choice; the worker's device decided what it became (a ResNet-18 on a GPU).
    built = ((version.training_data or {}).get("backbone") or {}).get("name")
    shown = {**config, "backbone": f"{config['backbone']} (built: {built})"} \
        if built and "backbone" in config and built != config["backbone"] else config
    parameters = [(label, _display(shown[key])) for key, label in CONFIG_ROWS if key in shown]
    counts = [{"name": name, "ground_truth": (version.trained_on.get(name) or {}).get("ground_truth", 0),
               "review": (version.trained_on.get(name) or {}).get("review", 0)} for name in label_set_names]
    # With TTA, the one-view figures were kept beside (versions before TTA were scored so).
    one_view = (((version.training_data or {}).get("validation") or {}).get("one_view")) or {}
    metric_entries = [{**entry, "one_view": one_view.get(entry["name"])}
                      for entry in version_metrics(version, project_classes)]
    return {
        "project": project,
        "version": version,
        "stages": stage_curves(version.history or [], label_set_names),
        "metric_entries": metric_entries,
        "comparison": comparison_with_replaced(version),
        "model_label_sets": model_sets,
        "label_counts": counts,
        "unlabelled_nuclei": version.trained_on.get("unlabelled_nuclei"),
        "data": version.training_data or {},
        "parameters": parameters,
        "members": [{"seed": m.get("seed"), "macro_f1": [((m.get("metrics") or {}).get(name) or {}).get("macro_f1")
                                                        for name in label_set_names]}
                    for m in (version.training_data or {}).get("members") or []],
        "member_label_sets": label_set_names,
        "seed": config.get("seed"),
        "split_seed": config.get("split_seed"),
    }
