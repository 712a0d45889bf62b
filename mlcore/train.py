"""Training: the three stages of correlation-based cross training, torchvision-reference style.

    stage 1 "sparse":       backbone on the merged label space, CE per known label set block
    stage 2 "correlation":  backbone frozen; MLP_d learns label set d from the other blocks' logits
    stage 3 "completion":   backbone + MLPs jointly: supervised CE + mutual confident pseudo labels

:func:`train_all` is what the CLI and the web app's Celery task call; :func:`train_one_epoch`,
:func:`train_correlation_epoch` and :func:`evaluate` are the flat building blocks.
Multi-GPU: launched under ``torchrun`` (WORLD_SIZE set), each process trains a shard through
DistributedDataParallel + DistributedSampler; rank 0 evaluates and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mlcore.backbones import resolve_backbone
from mlcore.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from mlcore.config import STAGE_NUMBER, STAGES, TrainConfig
from mlcore.data import (CropBatches, NucleusTable, WeightedEpochSampler, augment, sampling_weights,
                         split_by_group)
from mlcore.losses import completion_loss, correlation_loss, sparse_loss
from mlcore.metrics import classification_report
from mlcore.model import CrossTrainedModel
from mlcore.predict import forward_logits, predictions_from_logits, resolve_device
from mlcore.types import MISSING, Cancelled, LabelSet

EPOCH_VALIDATION_ROWS = 4096  # the most validation rows each epoch's macro-F1 is measured on

ProgressFn = Callable[[dict], None]
StageDoneFn = Callable[[str, "Path | None", dict], None]
StopFn = Callable[[], bool]


@dataclass
class TrainResult:
    checkpoint_path: Path | None            # DIR/model.pt (None without out_dir)
    stage_checkpoints: dict[str, Path]
    metrics: dict                           # validation metrics per label set after the last stage
    stage_metrics: dict[str, dict]          # the same after each stage
    history: list[dict]                     # one entry per epoch: stage, epoch, loss, seconds, samples/s
    model: CrossTrainedModel
    train_rows: np.ndarray
    val_rows: np.ndarray


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistributedContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)


def _wrap(module: nn.Module, context: DistributedContext, device: torch.device,
          find_unused: bool = False) -> nn.Module:
    if not context.enabled:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused)


# ----------------------------------------------------------------------------------------------
# Data loading


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


def _set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    loader.sampler.sampler.set_epoch(epoch)  # BatchSampler -> RowSampler -> inner


# ----------------------------------------------------------------------------------------------
# One epoch


@dataclass
class StageClock:
    """Progress bookkeeping of a stage, for ETA."""

    total_steps: int
    done_steps: int = 0
    start: float = field(default_factory=time.perf_counter)

    def eta(self) -> float:
        if self.done_steps == 0:
            return float("nan")
        elapsed = time.perf_counter() - self.start
        return elapsed / self.done_steps * max(self.total_steps - self.done_steps, 0)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params, grad_clip: float,
                   scheduler=None) -> None:
    """One update as every stage makes it: backward, gradient-norm clip, step, schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()


def train_one_epoch(model: nn.Module, stage: str, optimizer: torch.optim.Optimizer,
                    loader: torch.utils.data.DataLoader, device: torch.device, epoch: int, epochs: int,
                    config: TrainConfig, blocks: tuple[tuple[int, int], ...], scheduler=None,
                    generator: torch.Generator | None = None, progress: ProgressFn | None = None,
                    should_stop: StopFn | None = None, clock: StageClock | None = None,
                    averaged: torch.optim.swa_utils.AveragedModel | None = None) -> dict:
    """One epoch of stage "sparse" (``model`` = the backbone) or "completion" (``model`` = the
    whole CrossTrainedModel); either may be DDP-wrapped. ``averaged`` (an exponential moving average
    of the weights) is updated after every step. Returns the mean loss and throughput."""
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    steps = len(loader)
    loss_sum, samples, pseudo_total = 0.0, 0, None
    start = time.perf_counter()
    for step, (crops, labels) in enumerate(loader):
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped in stage {stage}, epoch {epoch + 1}, step {step + 1}")
        if len(labels) < 2:
            continue  # BatchNorm cannot train on a single sample
        images = augment(crops, generator, config.jitter, device, config.stain_jitter)
        labels = labels.to(device, non_blocking=True)
        if stage == "sparse":
            loss = sparse_loss(model(images), labels, blocks)
        else:
            logits, heads = model(images)
            loss, terms = completion_loss(logits, heads, labels, blocks, config.threshold, config.pseudo_weight,
                                          config.completion_weighting)
            pseudo_total = terms.pseudo_counts if pseudo_total is None else pseudo_total + terms.pseudo_counts
        optimizer_step(loss, optimizer, params, config.grad_clip, scheduler)
        if averaged is not None:
            averaged.update_parameters(getattr(model, "module", model))
        # Keep Python floats only: no autograd graph outlives its batch.
        loss_value = loss.item()
        loss_sum += loss_value * len(labels)
        samples += len(labels)
        if clock is not None:
            clock.done_steps += 1
        if progress is not None:
            progress({"stage": stage, "epoch": epoch + 1, "epochs": epochs, "step": step + 1, "steps": steps,
                      "loss": loss_value, "eta_s": clock.eta() if clock else float("nan")})
    seconds = time.perf_counter() - start
    out = {"stage": stage, "epoch": epoch + 1, "loss": loss_sum / max(samples, 1), "samples": samples,
           "seconds": seconds, "samples_per_s": samples / seconds if seconds > 0 else 0.0,
           "lr": optimizer.param_groups[0]["lr"]}
    if pseudo_total is not None:
        out["pseudo_labels"] = pseudo_total.tolist()  # (D, 2): base <- mlp, mlp <- base
    return out


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
            images = augment(torch.from_numpy(table.crops[batch]), generator, config.jitter, device,
                             config.stain_jitter)
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


def train_correlation_epoch(heads: nn.Module, optimizer: torch.optim.Optimizer, features: torch.Tensor,
                            labels: torch.Tensor, epoch: int, epochs: int, config: TrainConfig, scheduler=None,
                            generator: torch.Generator | None = None, progress: ProgressFn | None = None,
                            should_stop: StopFn | None = None, clock: StageClock | None = None) -> dict:
    """One stage-2 epoch: each MLP_d on the nuclei whose class in d is known (as the method trains
    one correlation layer per dataset), over the cached frozen logits.

    The draws follow the sampling settings of stages 1 and 3: with ``config.class_power`` > 0 each
    MLP's rows are drawn with replacement, weighted by ``n_class^-class_power`` (otherwise a small
    label set's MLP learns mostly its commonest class: 238 of NuCLS's 353 nuclei are sTIL), and with
    ``config.dataset_power`` > 0 small label sets get more draws (:func:`correlation_draws`). With
    both 0, one shuffled pass over each MLP's known labels."""
    heads.train()
    num_sets = labels.shape[1]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    plan = []  # (d, row indices of one batch)
    draws = correlation_draws([int((labels[:, d] != MISSING).sum()) for d in range(num_sets)], config.dataset_power)
    for d in range(num_sets):
        order = correlation_epoch_rows(labels[:, d], config.class_power, generator, draws[d])
        plan += [(d, order[i:i + config.batch_size]) for i in range(0, len(order), config.batch_size)]
    plan = [plan[i] for i in torch.randperm(len(plan), generator=generator).tolist()]  # interleave the sets
    if dist.is_available() and dist.is_initialized():
        # Ranks hold shards of different sizes: run as many steps as the smallest (DDP needs equal steps).
        steps = torch.tensor([len(plan)], device=features.device)
        dist.all_reduce(steps, op=dist.ReduceOp.MIN)
        plan = plan[:int(steps.item())]
    loss_sum, samples, start = 0.0, 0, time.perf_counter()
    for step, (d, batch) in enumerate(plan):
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped in stage correlation, epoch {epoch + 1}, step {step + 1}")
        if len(batch) < 2:
            continue
        loss = correlation_loss(heads(features[batch], d), labels[batch, d])
        optimizer_step(loss, optimizer, params, config.grad_clip, scheduler)
        loss_value = loss.item()
        loss_sum += loss_value * len(batch)
        samples += len(batch)
        if clock is not None:
            clock.done_steps += 1
        if progress is not None:
            progress({"stage": "correlation", "epoch": epoch + 1, "epochs": epochs, "step": step + 1,
                      "steps": len(plan), "loss": loss_value, "eta_s": clock.eta() if clock else float("nan")})
    seconds = time.perf_counter() - start
    return {"stage": "correlation", "epoch": epoch + 1, "loss": loss_sum / max(samples, 1), "samples": samples,
            "seconds": seconds, "samples_per_s": samples / seconds if seconds > 0 else 0.0,
            "lr": optimizer.param_groups[0]["lr"]}


def correlation_steps_per_epoch(labels: np.ndarray, batch_size: int, dataset_power: float = 0.0) -> int:
    """Stage-2 optimizer steps per epoch over the frozen features' ``labels`` (for the schedule)."""
    draws = correlation_draws([int((labels[:, d] != MISSING).sum()) for d in range(labels.shape[1])], dataset_power)
    return sum(math.ceil(n / batch_size) for n in draws)


# ----------------------------------------------------------------------------------------------
# Evaluation


def evaluation_rows(model: CrossTrainedModel, table: NucleusTable, rows: np.ndarray | None = None) -> np.ndarray:
    """The rows of ``rows`` (default: all) whose class is known in at least one of the model's label sets."""
    model = getattr(model, "module", model)
    rows = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.int64)
    table_columns = {s.name: d for d, s in enumerate(table.label_sets)}
    for label_set in model.label_sets:
        if label_set.name in table_columns and table.label_sets[table_columns[label_set.name]].classes != label_set.classes:
            raise ValueError(f"label set {label_set.name!r}: the data's classes differ from the model's")
    known_any = np.zeros(len(rows), dtype=bool)
    for label_set in model.label_sets:
        if label_set.name in table_columns:
            known_any |= table.labels[rows, table_columns[label_set.name]] != MISSING
    return rows[known_any]


def reports_from_logits(model: CrossTrainedModel, table: NucleusTable, rows: np.ndarray, logits: torch.Tensor,
                        heads: list[torch.Tensor]) -> dict[str, dict]:
    """:func:`evaluate`'s reports from the logits of ``rows`` (as :func:`evaluation_rows` returns them)."""
    model = getattr(model, "module", model)
    table_columns = {s.name: d for d, s in enumerate(table.label_sets)}
    predictions = predictions_from_logits(model, logits, heads)
    out = {}
    for label_set in model.label_sets:
        if label_set.name not in table_columns:
            continue
        truth = table.labels[rows, table_columns[label_set.name]]
        known = truth != MISSING
        prediction = predictions[label_set.name]
        report = classification_report(truth[known], prediction.labels[known], label_set.classes)
        report["base_accuracy"] = float((prediction.base_probs[known].argmax(1) == truth[known]).mean()) if known.any() else 0.0
        if prediction.mlp_probs is not None:
            report["mlp_accuracy"] = float((prediction.mlp_probs[known].argmax(1) == truth[known]).mean()) if known.any() else 0.0
        out[label_set.name] = report
    return out


def evaluate(model: CrossTrainedModel, table: NucleusTable, rows: np.ndarray | None = None,
             device: str | torch.device | None = None, batch_size: int = 512, tta: bool = False) -> dict[str, dict]:
    """Validation metrics per label set on the rows whose class in that set is known (``tta``: the
    mean over the 8 symmetries, see :func:`mlcore.predict.forward_logits`).

    Each report has n, accuracy, macro_f1, weighted_f1, per_class and confusion (of the final
    prediction) plus base_accuracy / mlp_accuracy of each branch alone.
    """
    model = getattr(model, "module", model)
    rows = evaluation_rows(model, table, rows)
    logits, heads = forward_logits(model, table.crops[rows], batch_size, device, tta)
    return reports_from_logits(model, table, rows, logits, heads)


class EpochValidation:
    """The validation macro-F1 of every epoch, for the training curves: on at most
    ``EPOCH_VALIDATION_ROWS`` validation rows (a fixed, seeded subset), so that it costs a fraction of an
    epoch. In stage 2 the backbone is frozen, so its logits are computed once and only the MLPs run."""

    def __init__(self, model: CrossTrainedModel, table: NucleusTable, val_rows: np.ndarray, device: torch.device,
                 seed: int, batch_size: int = 512):
        rows = evaluation_rows(model, table, val_rows)
        if len(rows) > EPOCH_VALIDATION_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(rows, EPOCH_VALIDATION_ROWS, replace=False))
        self.model, self.table, self.rows, self.device, self.batch_size = model, table, rows, device, batch_size
        self.frozen_logits: torch.Tensor | None = None

    def freeze(self) -> None:
        """Stage 2 begins: keep the frozen backbone's logits of the validation rows."""
        self.frozen_logits = forward_logits(self.model, self.table.crops[self.rows], self.batch_size, self.device)[0]

    def thaw(self) -> None:
        self.frozen_logits = None

    def __call__(self) -> dict:
        if len(self.rows) == 0:
            return {}
        start = time.perf_counter()
        if self.frozen_logits is None:
            logits, heads = forward_logits(self.model, self.table.crops[self.rows], self.batch_size, self.device)
        else:
            logits = self.frozen_logits
            was_training = self.model.training
            self.model.eval()
            with torch.inference_mode():
                heads = [h.float().cpu() for h in self.model.heads_forward(logits.to(self.device))]
            self.model.train(was_training)
        reports = reports_from_logits(self.model, self.table, self.rows, logits, heads)
        return {"val_macro_f1": {name: report["macro_f1"] for name, report in reports.items()},
                "val_rows": int(len(self.rows)), "val_seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------------------------
# The whole run


def _cosine(total_steps: int):
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def _make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    if config.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(total_steps))


def weight_average(module: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``module``'s weights and BatchNorm statistics (None when
    ``decay`` is 0). It ends a stage in the model's place: the last steps' noise averaged out, so two
    seeds land closer together."""
    if not decay:
        return None
    return torch.optim.swa_utils.AveragedModel(module, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay),
                                               use_buffers=True)


def _stage_parameters(model: CrossTrainedModel, stage: str) -> list[nn.Parameter]:
    """Freeze what the stage does not train (no gradient, no optimizer state, no DDP sync)."""
    train_backbone = stage in ("sparse", "completion")
    train_heads = stage in ("correlation", "completion")
    for p in model.backbone.parameters():
        p.requires_grad_(train_backbone)
    for p in model.correlation_heads.parameters():
        p.requires_grad_(train_heads)
    return [p for p in model.parameters() if p.requires_grad]


def train_all(table: NucleusTable, label_sets: Sequence[LabelSet] | None = None, config: TrainConfig | None = None,
              stages: Sequence[str] = STAGES, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
              init_checkpoint: str | Path | LoadedCheckpoint | None = None, out_dir: str | Path | None = None,
              train_rows: np.ndarray | None = None, val_rows: np.ndarray | None = None,
              history: Sequence[dict] | None = None, stage_done: StageDoneFn | None = None,
              validate_epochs: bool = True) -> TrainResult:
    """Run the requested stages in order and return the model, checkpoints and metrics.

    - ``label_sets``: the model's label sets (default: the table's); the table's columns are
      selected to match.
    - ``progress(dict(stage, epoch, epochs, step, steps, loss, eta_s))`` is called after every batch
      (and with ``step=0`` when a stage starts or its frozen logits are being computed).
    - ``should_stop()`` is checked before every batch; when it returns True the run raises
      :class:`mlcore.types.Cancelled` and writes no final checkpoint (finished stages keep theirs).
    - ``init_checkpoint``: start from a checkpoint. When it is an unfinished epoch-checkpoint of the
      first requested stage (``last.pt``), that stage resumes at the next epoch with its optimizer
      and schedule state; otherwise its weights start the first requested stage.
    - ``out_dir``: where ``stage1.pt``/``stage2.pt``/``stage3.pt``, ``last.pt`` (end of every epoch),
      ``model.pt`` and ``metrics.json`` go; None writes nothing.
    - The validation split is :func:`split_by_group` with the config's fraction and seed unless
      ``train_rows``/``val_rows`` are given.
    - ``history``: the epochs of earlier stages (a run resumed from a stage checkpoint passes that
      checkpoint's ``extra["history"]``), kept at the head of ``result.history`` and of every checkpoint's.
    - ``stage_done(stage, checkpoint path or None, metrics)`` is called when a stage has finished and its
      checkpoint is written (on the main process).
    - ``validate_epochs``: each epoch's history entry gets ``val_macro_f1`` per label set
      (:class:`EpochValidation`), for the training curves.
    """
    config = config or TrainConfig()
    config.validate()
    stages = tuple(stages)
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    if list(stages) != sorted(stages, key=STAGES.index):
        raise ValueError(f"stages must be in order {STAGES}, got {stages}")
    if label_sets is not None and [s.name for s in label_sets] != [s.name for s in table.label_sets]:
        table = table.with_label_sets(list(label_sets))
    label_sets = list(table.label_sets)
    if len(label_sets) < 2 and any(stage != "sparse" for stage in stages):
        raise ValueError("the correlation and completion stages need at least two label sets "
                         f"(have {[s.name for s in label_sets]}); train the sparse stage only")
    context = init_distributed()
    device = resolve_device(config.device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed + context.rank)
    generator = torch.Generator().manual_seed(config.seed * 1000 + context.rank)

    if train_rows is None or val_rows is None:
        train_rows, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    train_rows, val_rows = np.asarray(train_rows, np.int64), np.asarray(val_rows, np.int64)

    resume_epoch, optimizer_state, scheduler_state = 0, None, None
    if init_checkpoint is not None:
        checkpoint = init_checkpoint if isinstance(init_checkpoint, LoadedCheckpoint) else load_checkpoint(init_checkpoint)
        model = checkpoint.model
        if [(s.name, s.classes) for s in model.label_sets] != [(s.name, s.classes) for s in label_sets]:
            raise ValueError("the checkpoint's label sets "
                             f"{[(s.name, list(s.classes)) for s in model.label_sets]} differ from the data's "
                             f"{[(s.name, list(s.classes)) for s in label_sets]}")
        if checkpoint.stage == stages[0] and not checkpoint.stage_complete:
            resume_epoch = checkpoint.epoch + 1
            optimizer_state, scheduler_state = checkpoint.optimizer_state, checkpoint.scheduler_state
    else:
        model = CrossTrainedModel(label_sets, *resolve_backbone(config.backbone, config.backbone_kwargs, device),
                                  config.crop_spec)
    if (model.crop_size, model.crop_spec.channels) != (table.crop_size, table.channels):
        raise ValueError(f"the model expects {model.crop_size}px crops with {model.crop_spec.channels} channels, "
                         f"the table has {table.crop_size}px with {table.channels}")
    model.to(device)
    model.to(memory_format=torch.channels_last)

    out_dir = Path(out_dir) if out_dir is not None else None
    main = context.is_main
    result = TrainResult(None, {}, {}, {}, list(history or []), model, train_rows, val_rows)
    epoch_validation = (EpochValidation(model, table, val_rows, device, config.split_seed)
                        if validate_epochs and main and len(val_rows) else None)
    labelled_train = train_rows[(table.labels[train_rows] != MISSING).any(axis=1)]

    def checkpoint_to(path, stage, epoch, complete, optimizer=None, scheduler=None, metrics=None):
        if main and out_dir is not None:
            return save_checkpoint(path, model, stage, epoch, complete, config, optimizer, scheduler, metrics,
                                   extra={"history": result.history, "val_rows": val_rows.tolist()})
        return None

    try:
        for stage_index, stage in enumerate(stages):
            epochs = config.epochs[stage]
            first_epoch = resume_epoch if stage_index == 0 else 0
            parameters = _stage_parameters(model, stage)
            optimizer = torch.optim.Adam(parameters, lr=config.lr[stage], weight_decay=config.weight_decay)
            if stage in ("correlation", "completion"):
                model.use_correlation.fill_(True)
            if progress and main:
                progress({"stage": stage, "epoch": first_epoch, "epochs": epochs, "step": 0, "steps": 0,
                          "loss": float("nan"), "eta_s": float("nan")})
            if stage == "correlation":
                if epoch_validation is not None:
                    epoch_validation.freeze()
                views = config.correlation_views
                features, feature_labels = frozen_logits(model, table, labelled_train[context.rank::context.world_size],
                                                         views, config, device, generator, should_stop)
                steps_per_epoch = correlation_steps_per_epoch(feature_labels.cpu().numpy(), config.batch_size,
                                                              config.dataset_power)
                runner = _wrap(_HeadForward(model), context, device, find_unused=True)
            else:
                rows = labelled_train if stage == "sparse" else train_rows
                loader = make_loader(table, rows, config, context, stage)
                steps_per_epoch = len(loader)
                trained = model.backbone if stage == "sparse" else model
                runner = _wrap(trained, context, device, find_unused=stage == "completion")
                # A resumed stage starts its average again from the resumed weights.
                averaged = weight_average(trained, config.ema_decay)
            scheduler = _make_scheduler(optimizer, config, steps_per_epoch * epochs)
            if optimizer_state is not None and stage_index == 0:
                optimizer.load_state_dict(optimizer_state)
                if scheduler is not None and scheduler_state is not None:
                    scheduler.load_state_dict(scheduler_state)
            clock = StageClock(steps_per_epoch * (epochs - first_epoch))
            for epoch in range(first_epoch, epochs):
                if stage == "correlation":
                    stats = train_correlation_epoch(runner, optimizer, features, feature_labels, epoch, epochs, config,
                                                    scheduler, generator, progress if main else None, should_stop, clock)
                else:
                    _set_epoch(loader, epoch)
                    stats = train_one_epoch(runner, stage, optimizer, loader, device, epoch, epochs, config,
                                            model.blocks, scheduler, generator, progress if main else None,
                                            should_stop, clock, averaged)
                    if averaged is not None and epoch == epochs - 1:
                        trained.load_state_dict(averaged.module.state_dict())
                if epoch_validation is not None:
                    stats.update(epoch_validation())
                result.history.append(stats)
                checkpoint_to(out_dir / "last.pt" if out_dir else None, stage, epoch, epoch == epochs - 1,
                              optimizer, scheduler)
            if main:
                metrics = evaluate(model, table, val_rows, device) if len(val_rows) else {}
                result.stage_metrics[stage] = metrics
                result.metrics = metrics
                path = checkpoint_to(out_dir / f"stage{STAGE_NUMBER[stage]}.pt" if out_dir else None, stage,
                                     epochs - 1, True, optimizer, scheduler, metrics)
                if path is not None:
                    result.stage_checkpoints[stage] = path
                if stage_done is not None:
                    stage_done(stage, path, metrics)
            if epoch_validation is not None:
                epoch_validation.thaw()
            if context.enabled:
                dist.barrier()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()
    if main and out_dir is not None:
        # model.pt is the last stage's checkpoint (optimizer state included, so it can resume too).
        result.checkpoint_path = out_dir / "model.pt"
        tmp = out_dir / f".model.pt.{os.getpid()}.tmp"
        shutil.copyfile(result.stage_checkpoints[stages[-1]], tmp)
        os.replace(tmp, result.checkpoint_path)
        write_metrics_json(out_dir / "metrics.json", result, table, stages)
    return result


SINGLE_BASELINE_PASSES = 4


def single_baseline_config(config: TrainConfig, train_count: int) -> TrainConfig:
    """The settings of a single-dataset baseline: the merged model's, except that an epoch of a
    fixed size (``samples_per_epoch``) is capped at 4 passes over that dataset's training nuclei,
    so that a 500-nucleus dataset is not drawn 16 times per epoch (same epochs and schedule)."""
    if config.samples_per_epoch is None:
        return config
    return replace(config, samples_per_epoch=max(config.batch_size,
                                                 min(config.samples_per_epoch, SINGLE_BASELINE_PASSES * train_count)))


def write_metrics_json(path: Path, result: TrainResult, table: NucleusTable, stages: Sequence[str]) -> None:
    payload = {"stage": stages[-1], "label_sets": result.metrics, "stages": result.stage_metrics,
               "history": result.history, "data": table.summary(),
               "split": {"train": int(len(result.train_rows)), "validation": int(len(result.val_rows))}}
    path.write_text(json.dumps(payload, indent=1))
