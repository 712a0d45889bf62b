"""Prediction: per label set, both branches' probabilities, the final class and uncertainty.

The final class of label set d is the argmax of the mean of softmax(base block d) and
softmax(MLP_d). Before the MLPs are trained (a stage-1 / sparse model) or with a single label
set, the base branch alone decides and ``mlp_probs`` is None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mlcore.data import dihedral, to_input
from mlcore.losses import LOGIT_CLAMP
from mlcore.model import CrossTrainedModel, SeedEnsemble
from mlcore.types import Cancelled, DeviceUnavailable
from mlcore.uncertainty import uncertainty_scores


@dataclass
class LabelSetPrediction:
    name: str
    classes: tuple[str, ...]
    base_probs: np.ndarray           # (N, C) softmax of the backbone's block
    mlp_probs: np.ndarray | None     # (N, C) softmax of the correlation MLP, None when untrained
    probs: np.ndarray                # (N, C) the mean of both (or base_probs alone)
    labels: np.ndarray               # (N,) int64 argmax of probs
    uncertainty: dict[str, np.ndarray]  # least_confidence, margin, entropy, disagreement: (N,) each


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {device} requested but CUDA is not available on this machine: use "
                                "\"auto\" (a GPU where there is one), or send the job to a GPU worker's queue")
    return device


@torch.inference_mode()
def forward_logits(model: CrossTrainedModel, crops: np.ndarray | torch.Tensor, batch_size: int = 512,
                   device: str | torch.device | None = None, tta: bool = False,
                   should_stop: Callable[[], bool] | None = None,
                   progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Raw backbone logits (N, K) and MLP logits (list of (N, C_d)) on the CPU, batched.

    ``tta``: test-time augmentation, the mean of both branches' logits over the 8 symmetries of the
    square (a nucleus has no orientation); 8 times the forward passes. A :class:`SeedEnsemble`'s are the mean
    of its members' (each with ``tta``). ``should_stop()``, checked before every batch, raises
    :class:`mlcore.types.Cancelled` when it returns True (scoring thousands of nuclei 8 times takes a while).
    ``progress(n)`` is called after every batch with its number of crops (a :class:`SeedEnsemble` counts each
    member's), as ``tqdm.update`` takes it.
    """
    if isinstance(model, SeedEnsemble):
        return mean_outputs([forward_logits(member, crops, batch_size, device, tta, should_stop, progress)
                             for member in model.members])
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    device = resolve_device(device)
    crops = torch.as_tensor(crops)
    logits, heads = [], []
    views = range(8) if tta else range(1)
    for start in range(0, len(crops), batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled()
        batch = crops[start:start + batch_size]
        view_logits = [model.backbone(to_input(dihedral(batch, code), device)) for code in views]
        batch_logits = torch.stack(view_logits).mean(dim=0)
        logits.append(batch_logits.float().cpu())
        if model.has_correlation_heads:
            view_heads = [model.heads_forward(v) for v in view_logits]
            heads.append([torch.stack([h[d] for h in view_heads]).mean(dim=0).float().cpu()
                          for d in range(len(model.correlation_heads))])
        if progress is not None:
            progress(len(batch))
    if not logits:
        empty = torch.zeros((0, model.num_outputs))
        return empty, [torch.zeros((0, len(s))) for s in model.label_sets] if model.has_correlation_heads else []
    all_heads = [torch.cat([h[d] for h in heads]) for d in range(len(model.correlation_heads))] if heads else []
    return torch.cat(logits), all_heads


def mean_outputs(outputs: list[tuple[torch.Tensor, list[torch.Tensor]]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Several models' :func:`forward_logits` of the same crops averaged: the backbone logits, and each label
    set's correlation-head logits."""
    logits = torch.stack([o[0] for o in outputs]).mean(dim=0)
    heads = [torch.stack([o[1][d] for o in outputs]).mean(dim=0) for d in range(len(outputs[0][1]))]
    return logits, heads


def predictions_from_logits(model: CrossTrainedModel, logits: torch.Tensor, heads: list[torch.Tensor]
                            ) -> dict[str, LabelSetPrediction]:
    use_mlp = bool(model.use_correlation) and model.has_correlation_heads
    out = {}
    for d, label_set in enumerate(model.label_sets):
        base = F.softmax(model.block(logits, d).clamp(-LOGIT_CLAMP, LOGIT_CLAMP), dim=1).numpy()
        mlp = F.softmax(heads[d], dim=1).numpy() if use_mlp else None
        probs = 0.5 * (base + mlp) if mlp is not None else base
        out[label_set.name] = LabelSetPrediction(label_set.name, label_set.classes, base, mlp, probs,
                                                 probs.argmax(axis=1).astype(np.int64),
                                                 uncertainty_scores(probs, base, mlp))
    return out


def predict(model: CrossTrainedModel, crops: np.ndarray | torch.Tensor, batch_size: int = 512,
            device: str | torch.device | None = None, tta: bool = False,
            should_stop: Callable[[], bool] | None = None,
            progress: Callable[[int], None] | None = None) -> dict[str, LabelSetPrediction]:
    """Predictions for uint8 crops (N, S, S, C), keyed by label set name (``tta``, ``should_stop``, ``progress``:
    see forward_logits)."""
    model = getattr(model, "module", model)
    logits, heads = forward_logits(model, crops, batch_size, device, tta, should_stop, progress)
    return predictions_from_logits(model, logits, heads)
