"""The three stages' losses. ``labels`` is always the (B, D) int matrix of the merged label space:
column d holds the class index in label set d, or ``MISSING`` (-1) when unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mlcore.types import MISSING

LOGIT_CLAMP = 10.0


def sparse_loss(logits: torch.Tensor, labels: torch.Tensor, blocks: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Stage 1: cross entropy with the softmax restricted to each known label set's block.

    Logits are clamped to [-10, 10] (as the method does, against overflow in the block softmax).
    A missing label set contributes nothing, so the logits of its block get exactly zero gradient.
    The sum is averaged over the known (nucleus, label set) cells of the batch.
    """
    total = logits.sum() * 0.0  # zero with a graph: backward() works on an all-missing batch
    known_cells = 0
    for d, (start, end) in enumerate(blocks):
        known = labels[:, d] != MISSING
        count = int(known.sum())
        if count == 0:
            continue
        block = logits[known, start:end].clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        total = total + F.cross_entropy(block, labels[known, d], reduction="sum")
        known_cells += count
    return total / max(known_cells, 1)


def correlation_loss(mlp_logits: torch.Tensor, labels_d: torch.Tensor) -> torch.Tensor:
    """Stage 2: cross entropy of MLP_d on the nuclei whose class in d is known."""
    known = labels_d != MISSING
    if not bool(known.any()):
        return mlp_logits.sum() * 0.0
    return F.cross_entropy(mlp_logits[known], labels_d[known])


@dataclass
class CompletionTerms:
    """Detached bookkeeping of one completion batch: per (label set, term) loss and count."""

    supervised: torch.Tensor     # (D, 2) losses: base, mlp (nan where absent)
    pseudo: torch.Tensor         # (D, 2) losses: base <- mlp, mlp <- base (nan where absent)
    pseudo_counts: torch.Tensor  # (D, 2) number of confident pseudo labels used


def completion_loss(logits: torch.Tensor, mlp_logits: list[torch.Tensor], labels: torch.Tensor,
                    blocks: tuple[tuple[int, int], ...], threshold: float = 0.99, pseudo_weight: float = 1.0,
                    weighting: str = "cells") -> tuple[torch.Tensor, CompletionTerms]:
    """Stage 3: supervised CE of both branches plus mutual pseudo-supervision on missing labels.

    For label set d:
      - supervised cells: CE(base block d, y) and CE(MLP_d, y) on nuclei whose class in d is known;
      - pseudo cells, on nuclei whose class in d is missing: where MLP_d's top probability exceeds
        ``threshold`` its argmax (detached) is the target of base block d, and where the base
        block's top probability exceeds it, its argmax is the target of MLP_d.

    Each present cell is the mean CE over its nuclei. The loss is the mean of the supervised cells
    present in the batch plus ``pseudo_weight`` (1, as the method has it) times the mean of the pseudo
    cells present. (The original averaged over all 2D cells of each kind, absent ones counting as
    zero, which shrank the loss whenever a label set was absent from a batch or no pseudo label
    passed the threshold.)

    ``weighting="nuclei"`` weighs each cell by its number of nuclei instead (each kind is then the
    mean CE over all its (nucleus, label set, branch) entries, as stage 1 weighs them), so that a
    label set with a dozen nuclei in the batch does not weigh as much as one with a hundred.
    """
    if weighting not in ("cells", "nuclei"):
        raise ValueError(f"weighting must be 'cells' or 'nuclei', got {weighting!r}")
    num_sets = len(blocks)
    nan = float("nan")
    supervised_cells, pseudo_cells = [], []
    supervised_sizes, pseudo_sizes = [], []
    supervised = logits.new_full((num_sets, 2), nan)
    pseudo = logits.new_full((num_sets, 2), nan)
    pseudo_counts = torch.zeros((num_sets, 2), dtype=torch.long)
    for d, (start, end) in enumerate(blocks):
        base = logits[:, start:end].clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        mlp = mlp_logits[d]
        known = labels[:, d] != MISSING
        if bool(known.any()):
            target = labels[known, d]
            for term, branch in enumerate((base, mlp)):
                cell = F.cross_entropy(branch[known], target)
                supervised_cells.append(cell)
                supervised_sizes.append(len(target))
                supervised[d, term] = cell.detach()
        missing = ~known
        if not bool(missing.any()):
            continue
        with torch.no_grad():
            base_conf, base_arg = F.softmax(base[missing], dim=1).max(dim=1)
            mlp_conf, mlp_arg = F.softmax(mlp[missing], dim=1).max(dim=1)
        # term 0: the base block learns from confident MLP_d; term 1: MLP_d from the confident base.
        for term, (student, confident, teacher_arg) in enumerate(
                ((base[missing], mlp_conf > threshold, mlp_arg), (mlp[missing], base_conf > threshold, base_arg))):
            count = int(confident.sum())
            if count == 0:
                continue
            cell = F.cross_entropy(student[confident], teacher_arg[confident])
            pseudo_cells.append(cell)
            pseudo_sizes.append(count)
            pseudo[d, term] = cell.detach()
            pseudo_counts[d, term] = count
    def combine(cells: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
        if weighting == "cells":
            return torch.stack(cells).mean()
        weights = logits.new_tensor(sizes, dtype=torch.float32)
        return (torch.stack(cells) * weights).sum() / weights.sum()

    loss = logits.new_zeros(())
    if supervised_cells:
        loss = loss + combine(supervised_cells, supervised_sizes)
    if pseudo_cells:
        loss = loss + pseudo_weight * combine(pseudo_cells, pseudo_sizes)
    if not supervised_cells and not pseudo_cells:
        loss = logits.sum() * 0.0  # keeps a graph so that backward() works on an all-empty batch
    return loss, CompletionTerms(supervised, pseudo, pseudo_counts)
