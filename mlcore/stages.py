"""The method's three stages as objects: what each trains, on which rows, drawn how, with which loss.

    stage 1 "sparse":       backbone on the merged label space, CE per known label set block
    stage 2 "correlation":  backbone frozen; MLP_d learns label set d from the other blocks' logits
    stage 3 "completion":   backbone + MLPs jointly: supervised CE + mutual confident pseudo labels

A stage is built when it starts (stage 2 then computes its frozen logits) and gives
:func:`mlcore.train.train_one_epoch`, the one epoch loop, its batches and each batch's loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence, Sized

import numpy as np
import torch
from torch import nn

from mlcore.config import TrainConfig
from mlcore.data import CropBatches, NucleusTable, WeightedEpochSampler, augment, sampling_weights
from mlcore.distributed import DistributedContext, smallest_across_ranks, wrap
from mlcore.losses import completion_loss, correlation_loss, sparse_loss
from mlcore.model import CrossTrainedModel
from mlcore.types import MISSING, Cancelled

StopFn = Callable[[], bool]


# ----------------------------------------------------------------------------------------------
# Data loading of stages 1 and 3


class _Length:
    """Stands in for a dataset of n items where a sampler only needs ``len``."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class RowSampler(torch.utils.data.Sampler):
    """Maps a sampler over positions 0..n-1 to table rows."""

    def __init__(self, inner, rows: np.ndarray):
        self.inner, self.rows = inner, rows

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self):
        return (int(self.rows[i]) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def stage_class_power(config: TrainConfig, stage: str) -> float:
    """The class weighting of a stage's draws: ``completion_class_power`` in stage 3 when set."""
    if stage == "completion" and config.completion_class_power is not None:
        return config.completion_class_power
    return config.class_power


def make_loader(table: NucleusTable, rows: np.ndarray, config: TrainConfig,
                context: DistributedContext, stage: str = "sparse") -> torch.utils.data.DataLoader:
    """Batches of (uint8 crops, labels) over ``rows``: a seeded shuffle (DistributedSampler) or,
    when sampling powers or an epoch size are set, a weighted draw with replacement."""
    class_power = stage_class_power(config, stage)
    if config.dataset_power or class_power or config.samples_per_epoch:
        weights = sampling_weights(table, rows, config.dataset_power, class_power)
        inner = WeightedEpochSampler(weights, config.samples_per_epoch or len(rows), config.seed,
                                     context.rank, context.world_size)
    else:
        inner = torch.utils.data.DistributedSampler(_Length(len(rows)), num_replicas=context.world_size,
                                                    rank=context.rank, shuffle=True, seed=config.seed)
    batches = torch.utils.data.BatchSampler(RowSampler(inner, rows), config.batch_size, drop_last=False)
    return torch.utils.data.DataLoader(CropBatches(table.crops, table.labels), batch_size=None, sampler=batches,
                                       num_workers=0)


def set_loader_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    loader.sampler.sampler.set_epoch(epoch)  # BatchSampler -> RowSampler -> inner


# ----------------------------------------------------------------------------------------------
# Stage 2's inputs and draws


@torch.no_grad()
def frozen_logits(model: CrossTrainedModel, table: NucleusTable, rows: np.ndarray, views: int, config: TrainConfig,
                  device: torch.device, generator: torch.Generator, should_stop: StopFn | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2 input: the frozen backbone's logits for ``views`` augmented views of each row.

    The backbone is frozen (eval mode, so also its BatchNorm statistics), so its logits can be
    computed once: the MLP epochs then cost almost nothing instead of a forward pass each.
    """
    model.eval()
    features, labels = [], []
    for _ in range(views):
        for start in range(0, len(rows), config.batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled("stopped in stage correlation while computing frozen logits")
            batch = rows[start:start + config.batch_size]
            # No view dropout: the MLPs learn from the logits the backbone gives at inference, of both views.
            images = augment(torch.from_numpy(table.crops[batch]), generator, config.jitter, device,
                             config.stain_jitter, zoom=config.scale_jitter, blur=config.blur_jitter,
                             grayscale=config.grayscale)
            features.append(model.backbone(images).float())
            labels.append(torch.from_numpy(table.labels[batch]).to(device))
    return torch.cat(features), torch.cat(labels)


class _HeadForward(nn.Module):
    """``forward(features, d)``: MLP_d on the other blocks' logits (a DDP-wrappable stage-2 model)."""

    def __init__(self, model: CrossTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, d: int) -> torch.Tensor:
        return self.model.correlation_heads[d](features.index_select(1, self.model.other_columns(d)))


def correlation_draws(known_counts: Sequence[int], dataset_power: float = 0.0) -> list[int]:
    """How many rows each MLP trains on per stage-2 epoch, given how many known labels each has.

    With ``dataset_power`` 0, one pass each. Otherwise a label set's share follows the same rule as
    the stage 1 and 3 sampler (a dataset's share ~ n^(1 - dataset_power)), scaled so that the largest
    label set keeps one pass: a label set with 250 labelled nuclei beside one with 15,000 would
    otherwise get 4 MLP steps an epoch against 235, and its MLP would barely train.
    """
    largest = max(known_counts, default=0)
    if not dataset_power or largest == 0:
        return [int(n) for n in known_counts]
    return [int(round(largest * (n / largest) ** (1.0 - dataset_power))) if n else 0 for n in known_counts]


def correlation_epoch_rows(labels_d: torch.Tensor, class_power: float = 0.0, generator: torch.Generator | None = None,
                           draws: int | None = None) -> torch.Tensor:
    """The rows MLP_d trains on in one stage-2 epoch: one shuffled pass over its known labels, or,
    with ``class_power`` > 0 or a number of ``draws``, that many (default: one per known label)
    drawn with replacement, weighted by ``n_class^-class_power``."""
    known = torch.nonzero(labels_d != MISSING).squeeze(1)
    if len(known) == 0 or (not class_power and (draws is None or draws == len(known))):
        return known[torch.randperm(len(known), generator=generator).to(known.device)]
    classes = labels_d[known]
    weights = torch.bincount(classes).double().pow(-class_power)[classes]
    drawn = torch.multinomial(weights.cpu(), len(known) if draws is None else draws, replacement=True,
                              generator=generator)
    return known[drawn.to(known.device)]


# ----------------------------------------------------------------------------------------------
# The stages


class Stage:
    """One stage of the method. Class attributes say what it trains; an instance holds its data.

    - ``runner``: the module the loss runs through (DDP-wrapped under torchrun); ``module``: the
      unwrapped module whose weights the stage changes (what a weight average follows).
    - :meth:`batches` gives one epoch's batches (sized: the loop reports step / steps),
      :meth:`loss` one batch's loss; :meth:`epoch_summary` adds the stage's own figures to the
      epoch's history entry.
    """

    name: str
    trains_backbone: bool
    trains_heads: bool
    trains_on_unlabelled: bool = False   # stage 3 pseudo-labels the nuclei no label set knows
    averages_weights: bool = True        # an EMA of the weights (``config.ema_decay``) may end the stage

    runner: nn.Module
    module: nn.Module
    steps_per_epoch: int

    @classmethod
    def trainable_parameters(cls, model: CrossTrainedModel) -> list[nn.Parameter]:
        """Freeze what the stage does not train (no gradient, no optimizer state, no DDP sync)."""
        for p in model.backbone.parameters():
            p.requires_grad_(cls.trains_backbone)
        for p in model.correlation_heads.parameters():
            p.requires_grad_(cls.trains_heads)
        return [p for p in model.parameters() if p.requires_grad]

    def batches(self, epoch: int) -> Sized:
        raise NotImplementedError

    def batch_length(self, batch) -> int:
        return len(batch[1])   # the labels (stages 1 and 3) or the rows (stage 2)

    def loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def training_images(self, batch) -> torch.Tensor:
        """The network's input for a batch (stages that average their weights recompute BatchNorm with it)."""
        raise NotImplementedError

    def epoch_summary(self) -> dict:
        return {}


class _CropStage(Stage):
    """Stages 1 and 3: batches of crops drawn by :func:`make_loader`, augmented on the fly."""

    def __init__(self, model: CrossTrainedModel, table: NucleusTable, rows: np.ndarray, config: TrainConfig,
                 context: DistributedContext, device: torch.device, generator: torch.Generator,
                 should_stop: StopFn | None = None):
        self.model, self.config, self.device, self.generator = model, config, device, generator
        self.loader = make_loader(table, rows, config, context, self.name)
        self.steps_per_epoch = len(self.loader)
        self.module = model.backbone if not self.trains_heads else model
        self.runner = wrap(self.module, context, device, find_unused=self.trains_heads)

    def batches(self, epoch: int) -> Sized:
        set_loader_epoch(self.loader, epoch)
        return self.loader

    def images_and_labels(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.training_images(batch), batch[1].to(self.device, non_blocking=True)

    def training_images(self, batch) -> torch.Tensor:
        """A batch's crops as the network trains on them: augmented, on the device."""
        return augment(batch[0], self.generator, self.config.jitter, self.device, self.config.stain_jitter,
                       self.config.context_view_dropout, self.config.scale_jitter, self.config.blur_jitter,
                       self.config.grayscale)


class SparseStage(_CropStage):
    """Stage 1: the backbone alone; each nucleus's loss covers only the label sets that know it."""

    name = "sparse"
    trains_backbone, trains_heads = True, False

    def loss(self, batch) -> torch.Tensor:
        images, labels = self.images_and_labels(batch)
        return sparse_loss(self.runner(images), labels, self.model.blocks)


class CompletionStage(_CropStage):
    """Stage 3: backbone and MLPs together; each branch's confident predictions supervise the other
    where a label is missing. Counts the pseudo labels of each epoch."""

    name = "completion"
    trains_backbone, trains_heads = True, True
    trains_on_unlabelled = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pseudo_counts: torch.Tensor | None = None

    def loss(self, batch) -> torch.Tensor:
        images, labels = self.images_and_labels(batch)
        logits, heads = self.runner(images)
        loss, terms = completion_loss(logits, heads, labels, self.model.blocks, self.config.threshold,
                                      self.config.pseudo_weight, self.config.completion_weighting)
        self.pseudo_counts = terms.pseudo_counts if self.pseudo_counts is None else self.pseudo_counts + terms.pseudo_counts
        return loss

    def epoch_summary(self) -> dict:
        counts, self.pseudo_counts = self.pseudo_counts, None
        return {} if counts is None else {"pseudo_labels": counts.tolist()}  # (D, 2): base <- mlp, mlp <- base


class CorrelationStage(Stage):
    """Stage 2: each MLP_d on the nuclei whose class in d is known (as the method trains one
    correlation layer per dataset), over the frozen backbone's logits, computed once when the stage
    is built (``config.correlation_views`` augmented views of each row).

    The draws follow the sampling settings of stages 1 and 3: with ``config.class_power`` > 0 each
    MLP's rows are drawn with replacement, weighted by ``n_class^-class_power`` (otherwise a small
    label set's MLP learns mostly its commonest class: 238 of NuCLS's 353 nuclei are sTIL), and with
    ``config.dataset_power`` > 0 small label sets get more draws (:func:`correlation_draws`). With
    both 0, one shuffled pass over each MLP's known labels."""

    name = "correlation"
    trains_backbone, trains_heads = False, True
    averages_weights = False

    def __init__(self, model: CrossTrainedModel, table: NucleusTable, rows: np.ndarray, config: TrainConfig,
                 context: DistributedContext, device: torch.device, generator: torch.Generator,
                 should_stop: StopFn | None = None):
        self.config, self.device, self.generator = config, device, generator
        self.features, self.labels = frozen_logits(model, table, rows[context.rank::context.world_size],
                                                   config.correlation_views, config, device, generator, should_stop)
        # How many rows each MLP draws per epoch depends only on the known labels: fixed for the stage.
        self.draws = correlation_draws([int((self.labels[:, d] != MISSING).sum()) for d in range(self.labels.shape[1])],
                                       config.dataset_power)
        self.steps_per_epoch = sum(math.ceil(n / config.batch_size) for n in self.draws)
        self.module = model.correlation_heads
        self.runner = wrap(_HeadForward(model), context, device, find_unused=True)

    def batches(self, epoch: int) -> Sized:
        """(d, rows of one batch) for every MLP, interleaved at random."""
        config, labels = self.config, self.labels
        plan = []
        for d in range(labels.shape[1]):
            order = correlation_epoch_rows(labels[:, d], config.class_power, self.generator, self.draws[d])
            plan += [(d, order[i:i + config.batch_size]) for i in range(0, len(order), config.batch_size)]
        plan = [plan[i] for i in torch.randperm(len(plan), generator=self.generator).tolist()]
        # Ranks hold shards of different sizes: all run as many steps as the smallest.
        return plan[:smallest_across_ranks(len(plan), self.features.device)]

    def loss(self, batch) -> torch.Tensor:
        d, rows = batch
        return correlation_loss(self.runner(self.features[rows], d), self.labels[rows, d])


STAGE_TYPES: dict[str, type[Stage]] = {stage.name: stage for stage in (SparseStage, CorrelationStage, CompletionStage)}
