"""Training: the three stages of correlation-based cross training, torchvision-reference style.

:func:`train_all` is what the CLI and the web app's Celery task call: it runs the requested stages
(:mod:`mlcore.stages`: what each trains, on what, with which loss) through one epoch loop,
:func:`train_one_epoch`, and scores them with :func:`evaluate`.
Multi-GPU: launched under ``torchrun`` (WORLD_SIZE set), each process trains a shard through
DistributedDataParallel (:mod:`mlcore.distributed`); rank 0 evaluates and writes checkpoints.
"""

from __future__ import annotations

import itertools
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
from torch import nn

from mlcore.backbones import resolve_backbone
from mlcore.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from mlcore.config import STAGE_NUMBER, STAGES, TrainConfig
from mlcore.data import NucleusTable, split_by_group
from mlcore.distributed import DistributedContext, barrier, init_distributed
from mlcore.metrics import classification_report, macro_f1_difference_interval
from mlcore.model import CrossTrainedModel, SeedEnsemble
from mlcore.predict import forward_logits, predictions_from_logits, resolve_device
from mlcore.stages import STAGE_TYPES, Stage
from mlcore.types import MISSING, Cancelled, LabelSet, TrainingDiverged

EPOCH_VALIDATION_ROWS = 4096  # the most validation rows each epoch's macro-F1 is measured on

ProgressFn = Callable[[dict], None]
StageDoneFn = Callable[[str, "Path | None", dict], None]
EpochDoneFn = Callable[[str, int, int, Path], None]   # (stage, its epochs done, its epochs, last.pt)
StopFn = Callable[[], bool]


@dataclass
class TrainResult:
    checkpoint_path: Path | None            # DIR/model.pt (None without out_dir)
    stage_checkpoints: dict[str, Path]
    metrics: dict                           # validation metrics per label set after the last stage
    stage_metrics: dict[str, dict]          # the same after each stage
    history: list[dict]                     # one entry per epoch: stage, epoch, loss, seconds, samples/s
    model: CrossTrainedModel | SeedEnsemble
    train_rows: np.ndarray
    val_rows: np.ndarray
    members: list[dict] = field(default_factory=list)  # an ensemble's: each member's seed and metrics
    random_state: dict | None = None        # where the draw stands after the last stage (see RandomState)


# ----------------------------------------------------------------------------------------------
# One epoch, any stage


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


def train_one_epoch(stage: Stage, optimizer: torch.optim.Optimizer, epoch: int, epochs: int, config: TrainConfig,
                    scheduler=None, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                    clock: StageClock | None = None,
                    averaged: torch.optim.swa_utils.AveragedModel | None = None) -> dict:
    """One epoch of any stage (:mod:`mlcore.stages`): its batches, its loss, one optimizer step each.
    ``averaged`` (an exponential moving average of the stage's weights) is updated after every step.
    Returns the epoch's history entry: mean loss, throughput and the stage's own figures."""
    stage.runner.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    batches = stage.batches(epoch)
    steps = len(batches)
    loss_sum, samples = 0.0, 0
    start = time.perf_counter()

    def report(step: int, loss_value: float | None) -> None:
        # "loss": this batch's; "epoch_loss": the mean over the epoch's batches so far (at its last step, the
        # epoch's, as its history entry says).
        if clock is not None:
            clock.done_steps += 1
        if progress is not None:
            progress({"stage": stage.name, "epoch": epoch + 1, "epochs": epochs, "step": step + 1, "steps": steps,
                      "loss": loss_value, "epoch_loss": loss_sum / samples if samples else None,
                      "eta_s": clock.eta() if clock else float("nan")})

    for step, batch in enumerate(batches):
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped in stage {stage.name}, epoch {epoch + 1}, step {step + 1}")
        size = stage.batch_length(batch)
        if size < 2:
            report(step, None)   # BatchNorm cannot train on a single sample; the step is still the epoch's
            continue
        loss = stage.loss(batch)
        # Keep Python floats only: no autograd graph outlives its batch. Checked before the step, so that the
        # weights are never overwritten with what a non-finite loss gives.
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"the training diverged: the loss became {loss_value} in stage {stage.name}, "
                                   f"epoch {epoch + 1}, step {step + 1}; lower the learning rate (lr) and keep "
                                   "gradient clipping (grad_clip)")
        optimizer_step(loss, optimizer, params, config.grad_clip, scheduler)
        if averaged is not None:
            averaged.update_parameters(stage.module)
        loss_sum += loss_value * size
        samples += size
        report(step, loss_value)
    seconds = time.perf_counter() - start
    return {"stage": stage.name, "epoch": epoch + 1, "loss": loss_sum / max(samples, 1), "samples": samples,
            "seconds": seconds, "samples_per_s": samples / seconds if seconds > 0 else 0.0,
            "lr": optimizer.param_groups[0]["lr"], **stage.epoch_summary()}


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
             device: str | torch.device | None = None, batch_size: int = 512, tta: bool = False,
             progress: Callable[[int], None] | None = None) -> dict[str, dict]:
    """Validation metrics per label set on the rows whose class in that set is known (``tta``: the
    mean over the 8 symmetries, see :func:`mlcore.predict.forward_logits`).

    Each report has n, accuracy, macro_f1, weighted_f1, per_class and confusion (of the final
    prediction) plus base_accuracy / mlp_accuracy of each branch alone.
    """
    return evaluate_with_logits(model, table, rows, device, batch_size, tta, progress=progress)[0]


def evaluate_with_logits(model: CrossTrainedModel, table: NucleusTable, rows: np.ndarray | None = None,
                         device: str | torch.device | None = None, batch_size: int = 512, tta: bool = False,
                         should_stop: StopFn | None = None, progress: Callable[[int], None] | None = None
                         ) -> tuple[dict[str, dict], tuple[torch.Tensor, list[torch.Tensor]]]:
    """:func:`evaluate`'s reports and the logits they came from, for a caller that scores the same rows again
    (:func:`compare_models`'s ``outputs``) without repeating the forward passes, 8 per nucleus with TTA.
    ``should_stop``, ``progress``: as :func:`mlcore.predict.forward_logits` takes them."""
    model = getattr(model, "module", model)
    rows = evaluation_rows(model, table, rows)
    outputs = forward_logits(model, table.crops[rows], batch_size, device, tta, should_stop, progress)
    return reports_from_logits(model, table, rows, *outputs), outputs


def compare_models(model: CrossTrainedModel, previous: CrossTrainedModel, table: NucleusTable,
                   rows: np.ndarray | None = None, device: str | torch.device | None = None, tta: bool = False,
                   outputs: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
                   should_stop: StopFn | None = None, progress: Callable[[int], None] | None = None) -> dict[str, dict]:
    """``model`` against ``previous`` (the model it replaces) on the same ``rows``, per label set both have:
    n, each model's macro-F1 and accuracy (as :func:`evaluate` reports them, all rows by default), and ``difference_interval``,
    the paired bootstrap 95% interval of the macro-F1 difference (model minus previous).

    Why the same rows: each training's validation split moves as the data grows, and a seed alone moves
    macro-F1 by a few hundredths, so two versions' own figures do not say whether the new one is better.
    Why the interval: on a few hundred nuclei a difference of a few hundredths can be chance; an interval
    wholly below 0 is a loss chance does not explain.
    ``outputs``: ``model``'s logits of those rows with the same ``tta`` (:func:`evaluate_with_logits`) when
    the caller has them already, so that its forward passes, 8 per nucleus with TTA, are not made twice.
    ``should_stop``, ``progress``: as :func:`mlcore.predict.forward_logits` takes them.
    Raises ValueError when ``previous`` cannot score these crops: they are cut differently for it, or one
    of its label sets has other classes than the table's."""
    model, previous = getattr(model, "module", model), getattr(previous, "module", previous)
    if previous.crop_spec != model.crop_spec:
        raise ValueError(f"it cuts {previous.crop_spec.text()}, where this model cuts {model.crop_spec.text()}")
    rows = evaluation_rows(model, table, rows)
    evaluation_rows(previous, table, rows)   # its label sets' classes must be the table's
    names = {s.name for s in previous.label_sets} & {s.name for s in table.label_sets}
    shared = [s for s in model.label_sets if s.name in names]
    if outputs is None:
        outputs = forward_logits(model, table.crops[rows], 512, device, tta, should_stop, progress)
    previous_outputs = forward_logits(previous, table.crops[rows], 512, device, tta, should_stop, progress)
    predicted = [predictions_from_logits(model, *outputs), predictions_from_logits(previous, *previous_outputs)]
    out = {}
    for label_set in shared:
        truth = table.labels[rows, table.label_set_index(label_set.name)]
        known = truth != MISSING
        if not known.any():
            continue
        mine, theirs = (p[label_set.name].labels[known] for p in predicted)
        report, before = (classification_report(truth[known], p, label_set.classes) for p in (mine, theirs))
        out[label_set.name] = {
            "n": report["n"], "macro_f1": report["macro_f1"], "previous_macro_f1": before["macro_f1"],
            "accuracy": report["accuracy"], "previous_accuracy": before["accuracy"],
            "difference_interval": list(macro_f1_difference_interval(truth[known], mine, theirs, len(label_set)))}
    return out


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


def make_optimizer(params, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The stage's optimizer as ``config.optimizer`` names it (mlcore.config.OPTIMIZERS)."""
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=lr, weight_decay=config.weight_decay)


def _make_scheduler(optimizer, config: TrainConfig, total_steps: int):
    if config.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(total_steps))


def weight_average(module: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``module``'s weights (None when ``decay`` is 0). It ends a stage in
    the model's place, the last steps' noise averaged out, so two seeds land closer together; then
    :func:`recompute_batchnorm` gives it BatchNorm statistics of its own.

    Why not average the BatchNorm statistics with the weights: the averaged weights are a network no batch
    has run through, and the average of the statistics the trained network had along the way is far from
    its activations'. On the real samples (seed 0, stage 1) that cost CoNSeP's validation macro-F1 0.36
    against 0.68 with recomputed statistics."""
    if not decay:
        return None
    return torch.optim.swa_utils.AveragedModel(module, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay),
                                               use_buffers=False)


def recompute_batchnorm(stage: Stage, epoch: int, max_batches: int = 64) -> None:
    """Set the BatchNorm statistics of ``stage.module`` to the plain mean over up to ``max_batches`` of the
    stage's own training batches (augmented as in training), as SWA's ``update_bn`` does for a loader."""
    batches = itertools.islice(stage.batches(epoch), max_batches)
    images = (stage.training_images(batch) for batch in batches if stage.batch_length(batch) >= 2)
    torch.optim.swa_utils.update_bn(images, stage.module)


class RandomState:
    """The states of the random number generators a stage draws from: torch's global one (new layers' weights,
    dropout), the run's generator (augmentation, the order of draws) and, on a GPU, the device's.

    Every checkpoint a run writes carries two (``extra["random_state"]``): ``stage_start``, as its stage began,
    and ``saved``, as it was written. A run that goes on from the checkpoint with the same seed puts them back,
    so that it draws what a run straight through would have drawn: a cancelled training resumed, stages run one
    call at a time (``--stage``) and an ensemble's members, trained stage by stage, end as the very models of an
    uninterrupted run of their seeds. Not under torchrun, where every process draws its own, and not a stage
    with weight averaging (``ema_decay``) resumed mid-way, whose average starts again."""

    @staticmethod
    def capture(generator: torch.Generator, device: torch.device) -> dict:
        state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
        if device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(device)
        return state

    @staticmethod
    def restore(state: dict, generator: torch.Generator, device: torch.device) -> None:
        torch.set_rng_state(state["torch"])
        generator.set_state(state["generator"])
        if device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class TrainingRun:
    """What every stage of one :func:`train_all` call shares: the model, the data and its split, the
    settings, the callbacks and the result being filled in."""

    model: CrossTrainedModel
    table: NucleusTable
    config: TrainConfig
    context: DistributedContext
    device: torch.device
    generator: torch.Generator
    result: TrainResult
    out_dir: Path | None = None
    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    stage_done: StageDoneFn | None = None
    epoch_done: EpochDoneFn | None = None
    epoch_validation: EpochValidation | None = None
    stage_start_random: dict | None = None

    @property
    def main(self) -> bool:
        return self.context.is_main

    def random_now(self) -> dict | None:
        return None if self.context.enabled else RandomState.capture(self.generator, self.device)

    def random_state(self) -> dict | None:
        """What a checkpoint written now carries so that a run can go on drawing from it (:class:`RandomState`)."""
        now = self.random_now()
        return None if now is None else {"stage_start": self.stage_start_random, "saved": now}

    def checkpoint(self, name: str, stage: str, epoch: int, complete: bool, optimizer=None, scheduler=None,
                   metrics=None) -> Path | None:
        """Write ``out_dir/name`` (the main process only; nothing without ``out_dir``)."""
        if not self.main or self.out_dir is None:
            return None
        return save_checkpoint(self.out_dir / name, self.model, stage, epoch, complete, self.config, optimizer,
                               scheduler, metrics, extra={"history": self.result.history,
                                                          "val_rows": self.result.val_rows.tolist(),
                                                          "random_state": self.random_state()})

    def report_start(self, stage: str, epoch: int, epochs: int) -> None:
        if self.progress and self.main:
            self.progress({"stage": stage, "epoch": epoch, "epochs": epochs, "step": 0, "steps": 0,
                           "loss": float("nan"), "eta_s": float("nan")})

    def build_stage(self, stage_type: type[Stage]) -> Stage:
        train_rows = self.result.train_rows
        rows = train_rows if stage_type.trains_on_unlabelled else \
            train_rows[(self.table.labels[train_rows] != MISSING).any(axis=1)]
        return stage_type(self.model, self.table, rows, self.config, self.context, self.device, self.generator,
                          self.should_stop)

    def run_stage(self, name: str, first_epoch: int = 0, resume_state: tuple[dict, dict | None] | None = None,
                  continued_random: dict | None = None) -> None:
        """Train stage ``name`` from ``first_epoch`` (with the optimizer and schedule state of an
        unfinished run), evaluate it and write its checkpoint. ``continued_random``: the random state of the
        checkpoint the run goes on from (:class:`RandomState`), put back where a straight run would be."""
        config, stage_type, epochs = self.config, STAGE_TYPES[name], self.config.epochs[name]
        if continued_random is not None:
            # An unfinished stage is built again as it was first built, then draws on from its last epoch.
            RandomState.restore(continued_random["stage_start"] if first_epoch else continued_random["saved"],
                                self.generator, self.device)
        self.stage_start_random = self.random_now()
        optimizer = make_optimizer(stage_type.trainable_parameters(self.model), config, config.lr[name])
        if stage_type.trains_heads:
            self.model.use_correlation.fill_(True)
        elif stage_type.trains_backbone:
            # Heads fit on the logits of the backbone before this stage (a fine-tune of a three-stage model, stage
            # 1 alone) would be averaged with a backbone they were not fit to: the base branch alone decides until
            # stage 2 fits them again, as before stage 2 in any training.
            self.model.use_correlation.fill_(False)
        self.report_start(name, first_epoch, epochs)
        if self.epoch_validation is not None and not stage_type.trains_backbone:
            self.epoch_validation.freeze()
        stage = self.build_stage(stage_type)
        # A resumed stage starts its average again from the resumed weights.
        averaged = weight_average(stage.module, config.ema_decay) if stage.averages_weights else None
        scheduler = _make_scheduler(optimizer, config, stage.steps_per_epoch * epochs)
        if resume_state is not None:
            optimizer.load_state_dict(resume_state[0])
            if scheduler is not None and resume_state[1] is not None:
                scheduler.load_state_dict(resume_state[1])
        clock = StageClock(stage.steps_per_epoch * (epochs - first_epoch))
        if continued_random is not None and first_epoch:
            RandomState.restore(continued_random["saved"], self.generator, self.device)
        for epoch in range(first_epoch, epochs):
            stats = train_one_epoch(stage, optimizer, epoch, epochs, config, scheduler,
                                    self.progress if self.main else None, self.should_stop, clock, averaged)
            if averaged is not None and epoch == epochs - 1:
                stage.module.load_state_dict(averaged.module.state_dict())
                recompute_batchnorm(stage, epoch)
            if self.epoch_validation is not None:
                stats.update(self.epoch_validation())
            self.result.history.append(stats)
            last = self.checkpoint("last.pt", name, epoch, epoch == epochs - 1, optimizer, scheduler)
            if last is not None and self.epoch_done is not None:
                self.epoch_done(name, epoch + 1, epochs, last)
        if self.main:
            metrics = evaluate(self.model, self.table, self.result.val_rows, self.device) \
                if len(self.result.val_rows) else {}
            self.result.stage_metrics[name] = self.result.metrics = metrics
            path = self.checkpoint(f"stage{STAGE_NUMBER[name]}.pt", name, epochs - 1, True, optimizer, scheduler,
                                   metrics)
            if path is not None:
                self.result.stage_checkpoints[name] = path
            if self.stage_done is not None:
                self.stage_done(name, path, metrics)
        if self.epoch_validation is not None:
            self.epoch_validation.thaw()
        barrier(self.context)
        self.result.random_state = self.random_state()


def check_stages(stages: Sequence[str], label_sets: Sequence[LabelSet]) -> tuple[str, ...]:
    stages = tuple(stages)
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    if list(stages) != sorted(stages, key=STAGES.index):
        raise ValueError(f"stages must be in order {STAGES}, got {stages}")
    if len(label_sets) < 2 and any(stage != "sparse" for stage in stages):
        raise ValueError("the correlation and completion stages need at least two label sets "
                         f"(have {[s.name for s in label_sets]}); train the sparse stage only")
    return stages


def start_model(table: NucleusTable, config: TrainConfig, first_stage: str, device: torch.device,
                init_checkpoint: str | Path | LoadedCheckpoint | None
                ) -> tuple[CrossTrainedModel, int, tuple[dict, dict | None] | None, dict | None]:
    """The model to train, the epoch the first stage starts at, the optimizer and schedule state
    it resumes with and the random state it draws on from: a new model, or ``init_checkpoint``'s (resumed
    when it is an unfinished epoch checkpoint of ``first_stage``; its draw goes on when it is that or a
    finished earlier stage, with the same seed)."""
    label_sets = list(table.label_sets)
    first_epoch, resume_state, continued_random = 0, None, None
    if init_checkpoint is not None:
        checkpoint = init_checkpoint if isinstance(init_checkpoint, LoadedCheckpoint) else load_checkpoint(init_checkpoint)
        model = checkpoint.model
        if isinstance(model, SeedEnsemble):
            raise ValueError(f"the checkpoint is an ensemble of {len(model.members)} models: train an ensemble of "
                             f"as many from it (config ensemble {len(model.members)}), or a single model afresh")
        if [(s.name, s.classes) for s in model.label_sets] != [(s.name, s.classes) for s in label_sets]:
            raise ValueError("the checkpoint's label sets "
                             f"{[(s.name, list(s.classes)) for s in model.label_sets]} differ from the data's "
                             f"{[(s.name, list(s.classes)) for s in label_sets]}")
        if checkpoint.stage == first_stage and not checkpoint.stage_complete:
            first_epoch = checkpoint.epoch + 1
            resume_state = (checkpoint.optimizer_state, checkpoint.scheduler_state)
        goes_on = first_epoch > 0 or (checkpoint.stage_complete
                                      and STAGES.index(checkpoint.stage) < STAGES.index(first_stage))
        if goes_on and checkpoint.config.seed == config.seed:
            continued_random = checkpoint.random_state
    else:
        model = CrossTrainedModel(label_sets, *resolve_backbone(config.backbone, config.backbone_kwargs, device),
                                  config.crop_spec)
    if (model.crop_size, model.crop_spec.channels) != (table.crop_size, table.channels):
        # table_from_arrays cuts plain 64 px crops unless told, where a default config trains on a wider view too
        raise ValueError(f"the model expects {model.crop_size}px crops with {model.crop_spec.channels} channels, "
                         f"the table has {table.crop_size}px with {table.channels}: build the table with "
                         f"crop_size={'checkpoint.model.crop_spec' if init_checkpoint is not None else 'config.crop_spec'}")
    model.to(device)
    model.to(memory_format=torch.channels_last)
    return model, first_epoch, resume_state, continued_random


def train_all(table: NucleusTable, label_sets: Sequence[LabelSet] | None = None, config: TrainConfig | None = None,
              stages: Sequence[str] = STAGES, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
              init_checkpoint: str | Path | LoadedCheckpoint | None = None, out_dir: str | Path | None = None,
              train_rows: np.ndarray | None = None, val_rows: np.ndarray | None = None,
              history: Sequence[dict] | None = None, stage_done: StageDoneFn | None = None,
              validate_epochs: bool = True, epoch_done: EpochDoneFn | None = None) -> TrainResult:
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
    - ``epoch_done(stage, epochs done, stage epochs, last.pt path)`` is called after every epoch's ``last.pt``
      is written (on the main process, with an ``out_dir``; not for an ensemble's models, whose epochs are
      not checkpointed one by one): a caller that keeps that file can resume the stage at the next epoch.
    - ``validate_epochs``: each epoch's history entry gets ``val_macro_f1`` per label set
      (:class:`EpochValidation`), for the training curves.
    - ``config.ensemble`` > 1: an ensemble of that many seeds (:func:`train_ensemble`).
    """
    config = config or TrainConfig()
    config.validate()
    if label_sets is not None and [s.name for s in label_sets] != [s.name for s in table.label_sets]:
        table = table.with_label_sets(list(label_sets))
    stages = check_stages(stages, table.label_sets)
    if config.ensemble > 1:
        if train_rows is None or val_rows is None:
            train_rows, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
        return train_ensemble(table, config, stages, progress, should_stop, init_checkpoint,
                              Path(out_dir) if out_dir is not None else None, np.asarray(train_rows, np.int64),
                              np.asarray(val_rows, np.int64), history, stage_done, validate_epochs)
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
    model, first_epoch, resume_state, continued_random = start_model(table, config, stages[0], device,
                                                                     init_checkpoint)

    out_dir = Path(out_dir) if out_dir is not None else None
    result = TrainResult(None, {}, {}, {}, list(history or []), model, train_rows, val_rows)
    run = TrainingRun(model, table, config, context, device, generator, result, out_dir, progress, should_stop,
                      stage_done, epoch_done)
    if validate_epochs and run.main and len(val_rows):
        run.epoch_validation = EpochValidation(model, table, val_rows, device, config.split_seed)
    try:
        for index, stage in enumerate(stages):
            if index == 0:
                run.run_stage(stage, first_epoch, resume_state, continued_random)
            else:
                run.run_stage(stage)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()
    if run.main and out_dir is not None:
        write_model_files(out_dir, result, table, stages)
    return result


def write_model_files(out_dir: Path, result: TrainResult, table: NucleusTable, stages: Sequence[str]) -> None:
    """``model.pt``, the last stage's checkpoint (optimizer state included, so it can resume too), and
    ``metrics.json``."""
    result.checkpoint_path = out_dir / "model.pt"
    tmp = out_dir / f".model.pt.{os.getpid()}.tmp"
    try:
        shutil.copyfile(result.stage_checkpoints[stages[-1]], tmp)
        os.replace(tmp, result.checkpoint_path)
    except BaseException:   # Ctrl-C or a full disk during the copy: no half copy left beside the checkpoints
        tmp.unlink(missing_ok=True)
        raise
    write_metrics_json(out_dir / "metrics.json", result, table, stages)


def member_starts(init_checkpoint: str | Path | LoadedCheckpoint | None, members: int) -> list:
    """Where each member of an ensemble of ``members`` starts: afresh, or from its own model in an ensemble
    checkpoint of as many members (a finished stage, or the version a training fine-tunes)."""
    if init_checkpoint is None:
        return [None] * members
    checkpoint = init_checkpoint if isinstance(init_checkpoint, LoadedCheckpoint) else load_checkpoint(init_checkpoint)
    models = list(checkpoint.model.members) if isinstance(checkpoint.model, SeedEnsemble) else [checkpoint.model]
    if len(models) != members:
        raise ValueError(f"the checkpoint holds {len(models)} model(s) and the config asks for an ensemble of "
                         f"{members}: each member goes on from its own model, so start afresh or from an "
                         f"ensemble of {members}")
    random_states = checkpoint.raw.get("extra", {}).get("member_random_states") or [None] * members
    return [LoadedCheckpoint(model=model, stage=checkpoint.stage, epoch=checkpoint.epoch,
                             stage_complete=checkpoint.stage_complete,
                             config=replace(checkpoint.config, ensemble=1, seed=checkpoint.config.seed + index),
                             random_state=random_state)
            for index, (model, random_state) in enumerate(zip(models, random_states))]


def train_ensemble(table: NucleusTable, config: TrainConfig, stages: Sequence[str], progress: ProgressFn | None,
                   should_stop: StopFn | None, init_checkpoint, out_dir: Path | None, train_rows: np.ndarray,
                   val_rows: np.ndarray, history: Sequence[dict] | None, stage_done: StageDoneFn | None,
                   validate_epochs: bool) -> TrainResult:
    """:func:`train_all` for ``config.ensemble`` > 1: that many models with the seeds ``config.seed``,
    ``config.seed + 1``, ... on one split, averaged into a :class:`SeedEnsemble`.

    Stage by stage: every member trains stage 1, then every member stage 2, and so on, so that each stage ends,
    as a single model's does, with one checkpoint (``stageN.pt``, the ensemble) that a run can resume from. The
    members' epochs are not checkpointed one by one (no ``last.pt``). ``progress`` events carry ``member``
    (1-based) and ``members``; history entries their ``member``; ``result.members`` each member's seed and
    metrics after the last stage, ``result.metrics`` and ``stage_metrics`` the ensemble's."""
    members = config.ensemble
    member_configs = [replace(config, ensemble=1, seed=config.seed + index) for index in range(members)]
    starts = member_starts(init_checkpoint, members)
    result = TrainResult(None, {}, {}, {}, list(history or []), None, train_rows, val_rows)
    is_main = init_distributed().is_main
    for stage in stages:
        trained = []
        for index, member_config in enumerate(member_configs):
            def member_progress(event: dict, number=index + 1) -> None:
                progress({**event, "member": number, "members": members})
            done = train_all(table, config=member_config, stages=(stage,),
                             progress=member_progress if progress else None, should_stop=should_stop,
                             init_checkpoint=starts[index], train_rows=train_rows, val_rows=val_rows,
                             validate_epochs=validate_epochs)
            trained.append(done)
            result.history.extend({**entry, "member": index + 1} for entry in done.history)
        starts = [LoadedCheckpoint(model=done.model, stage=stage, epoch=config.epochs[stage] - 1, stage_complete=True,
                                   config=member_config, random_state=done.random_state)
                  for done, member_config in zip(trained, member_configs)]
        result.model = SeedEnsemble([done.model for done in trained]).eval()
        result.members = [{"seed": c.seed, "metrics": done.metrics} for c, done in zip(member_configs, trained)]
        if not is_main:
            continue
        metrics = evaluate(result.model, table, val_rows) if len(val_rows) else {}
        result.stage_metrics[stage] = result.metrics = metrics
        path = None
        if out_dir is not None:
            path = save_checkpoint(out_dir / f"stage{STAGE_NUMBER[stage]}.pt", result.model, stage,
                                   config.epochs[stage] - 1, True, config, metrics=metrics,
                                   extra={"history": result.history, "val_rows": val_rows.tolist(),
                                          "members": result.members,
                                          "member_random_states": [done.random_state for done in trained]})
            result.stage_checkpoints[stage] = path
        if stage_done is not None:
            stage_done(stage, path, metrics)
    if is_main and out_dir is not None:
        write_model_files(out_dir, result, table, stages)
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
    if result.members:
        payload["members"] = result.members
    path.write_text(json.dumps(payload, indent=1))
