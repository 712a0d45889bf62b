"""How long a training takes, and a default schedule that keeps a small project's training short.

:func:`default_schedule` is the rule the web app uses for the epochs and the draws per epoch it proposes:
one draw per nucleus per epoch (at most ``SAMPLES_PER_EPOCH_CAP``, the CLI's fixed epoch size), and as
many epochs as keep the two backbone stages (1 and 3) within ``DRAW_BUDGET`` draws together, between
``MIN_EPOCHS`` and ``MAX_EPOCHS``. A 600-nucleus project gets 10 epochs of 600 draws (12,000 draws, a
minute or two on two busy cores); from 10,000 nuclei on the budget binds, and beyond 32,768 nuclei it is
3 epochs of 32,768. The CLI keeps its own defaults (``TrainConfig``): a config file states its schedule.

:func:`estimate_seconds` costs a schedule from two measured speeds (training and inference samples per
second, :func:`measure_speed` or a finished training's record), stage by stage, as :func:`mlcore.train.train_all`
spends its time: backbone epochs, per-epoch validation on at most ``EPOCH_VALIDATION_ROWS`` rows, the frozen
features of stage 2 and each stage's final evaluation. Loading the images is not included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch

from mlcore.config import STAGES
from mlcore.train import EPOCH_VALIDATION_ROWS

SAMPLES_PER_EPOCH_CAP = 32768
DRAW_BUDGET = 200_000
MIN_EPOCHS, MAX_EPOCHS = 2, 10


def default_schedule(nuclei: int, batch_size: int = 128) -> dict:
    """The default ``samples_per_epoch`` and ``epochs`` (per stage) for a project of ``nuclei`` nuclei."""
    draws = min(max(int(nuclei), batch_size), SAMPLES_PER_EPOCH_CAP)
    epochs = max(MIN_EPOCHS, min(MAX_EPOCHS, DRAW_BUDGET // (2 * draws)))
    return {"samples_per_epoch": draws, "epochs": epochs}


def describe_rule() -> str:
    return (f"one draw per nucleus per epoch (at most {SAMPLES_PER_EPOCH_CAP:,}), and epochs so that stages 1 "
            f"and 3 draw at most {DRAW_BUDGET:,} crops together ({MIN_EPOCHS} to {MAX_EPOCHS} epochs)")


def estimate_seconds(*, nuclei: int, labelled: int, stages: Sequence[str], epochs: dict, samples_per_epoch: int | None,
                     train_samples_per_s: float, infer_samples_per_s: float, val_fraction: float = 0.2,
                     correlation_views: int = 2) -> dict:
    """Seconds per stage and in total for a training of these sizes at these speeds.

    ``nuclei``: every nucleus of the data; ``labelled``: those with a known class in at least one label set.
    """
    if train_samples_per_s <= 0 or infer_samples_per_s <= 0:
        raise ValueError("speeds must be positive")
    train_rows = nuclei * (1 - val_fraction)
    labelled_train = labelled * (1 - val_fraction)
    labelled_val = labelled * val_fraction
    epoch_validation = min(labelled_val, EPOCH_VALIDATION_ROWS) / infer_samples_per_s
    final_evaluation = labelled_val / infer_samples_per_s
    per_stage = {}
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        n_epochs = int(epochs.get(stage, 0)) if isinstance(epochs, dict) else int(epochs)
        if stage == "correlation":
            # The frozen backbone's features, once per view; the MLP epochs themselves cost next to nothing.
            seconds = correlation_views * labelled_train / infer_samples_per_s + final_evaluation
        else:
            draws = samples_per_epoch or (labelled_train if stage == "sparse" else train_rows)
            seconds = n_epochs * (draws / train_samples_per_s + epoch_validation) + final_evaluation
        per_stage[stage] = seconds
    return {"per_stage": per_stage, "total": sum(per_stage.values())}


def measure_speed(backbone: str = "small", backbone_kwargs: dict | None = None, crop_size: int = 64,
                  batch_size: int = 32, batches: int = 2, num_outputs: int = 8, device: str = "cpu",
                  channels: int = 3, stain_jitter: float = 0.0) -> dict:
    """Samples per second of a training step (augment, forward, backward, Adam) and of inference, timed on a
    few random batches after a warm-up batch. A small batch keeps this to a few seconds even for ResNet-50;
    the per-sample speed of a larger batch is a little better, so the estimate errs on the long side.
    ``backbone`` "auto" is timed as the backbone it becomes on ``device``."""
    from mlcore.backbones import create_model, resolve_backbone
    from mlcore.data import augment, to_input

    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    backbone, backbone_kwargs = resolve_backbone(backbone, backbone_kwargs, device)
    model = create_model(backbone, num_outputs, in_channels=channels, **backbone_kwargs).to(device)
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    crops = torch.randint(0, 256, (batch_size, crop_size, crop_size, channels), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, num_outputs, (batch_size,), generator=generator).to(device)

    def train_step():
        loss = torch.nn.functional.cross_entropy(model(augment(crops, generator, 0.1, device, stain_jitter)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step():
        with torch.inference_mode():
            model(to_input(crops, device))

    speeds = {}
    for name, step, mode in (("train_samples_per_s", train_step, model.train),
                             ("infer_samples_per_s", infer_step, model.eval)):
        mode()
        step()  # warm-up: allocations, kernel choice
        _sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            step()
        _sync(device)
        speeds[name] = batches * batch_size / max(time.perf_counter() - start, 1e-6)
    return speeds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed_from_history(history: Sequence[dict]) -> dict | None:
    """The training and inference speeds a finished training recorded (its epochs' samples per second, and
    its per-epoch validation's), or None when it recorded none."""
    train = [h["samples"] / h["seconds"] for h in history
             if h.get("stage") in ("sparse", "completion") and h.get("seconds") and h.get("samples")]
    # The backbone stages' validation only: stage 2's runs its small heads on logits computed once (about 30
    # times as fast), and averaged in it made the estimate's forward passes about 11 times too fast.
    infer = [h["val_rows"] / h["val_seconds"] for h in history
             if h.get("stage") in ("sparse", "completion") and h.get("val_seconds") and h.get("val_rows")]
    if not train:
        return None
    train_speed = sum(train) / len(train)
    # Inference is about 3-6x faster than a training step; a run that validated no epoch assumes 3x.
    infer_speed = sum(infer) / len(infer) if infer else 3 * train_speed
    if not (math.isfinite(train_speed) and math.isfinite(infer_speed)):
        return None
    return {"train_samples_per_s": train_speed, "infer_samples_per_s": infer_speed}
