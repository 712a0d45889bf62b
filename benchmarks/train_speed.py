"""Training throughput: ``train_one_epoch`` vs a bare training loop over the same model and crops.

    .venv/bin/python benchmarks/train_speed.py [--samples 4096] [--repeats 3] [--backbone small]

The bare loop is the least a training step can do: slice the cached uint8 crops, convert them to
float, forward, plain cross entropy on one label set's block, backward, Adam step. ``train_one_epoch``
adds what the method needs: the sampler and DataLoader, batched augmentation (dihedral + colour
jitter), the block-restricted sparse loss over every label set, gradient clipping, the cosine
schedule and a progress callback per batch. Same model, same crops (4 label sets, synthetic
H&E-like nuclei from ``mlcore.synthetic``), same batch size, 2 torch threads; ``--repeats``
alternating runs, best and median. Prints samples/s of both and the ratio (target >= 0.85).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcore.config import TrainConfig  # noqa: E402
from mlcore.data import build_table, to_input  # noqa: E402
from mlcore.model import CrossTrainedModel  # noqa: E402
from mlcore.synthetic import generate_nucleus_dataset  # noqa: E402
from mlcore.distributed import DistributedContext  # noqa: E402
from mlcore.stages import SparseStage  # noqa: E402
from mlcore.train import _make_scheduler, train_one_epoch  # noqa: E402


def synthetic_table(samples: int):
    per_image = 80
    images = max(4, samples // (4 * per_image) + 1)
    datasets = [generate_nucleus_dataset(images, per_image, seed=seed, name=name, n_classes=classes)
                for seed, (name, classes) in enumerate([("consep", 4), ("pannuke", 5), ("breast", 2), ("nucls", 4)])]
    return build_table(datasets)


def bare_epoch(model: CrossTrainedModel, optimizer, crops: torch.Tensor, labels: torch.Tensor, batch_size: int) -> int:
    """The plainest loop: in order, no augmentation, CE on each sample's own block only."""
    model.backbone.train()
    start, end = model.blocks[0]
    for offset in range(0, len(crops), batch_size):
        images = to_input(crops[offset:offset + batch_size])
        target = labels[offset:offset + batch_size]
        loss = F.cross_entropy(model.backbone(images)[:, start:end], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(crops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbone", default="small")
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    table = synthetic_table(args.samples)
    rows = np.flatnonzero((table.labels != -1).any(axis=1))[:args.samples]
    kwargs = {"width": args.width} if args.backbone == "small" else {}
    config = TrainConfig(backbone=args.backbone, backbone_kwargs=kwargs, batch_size=128,
                         samples_per_epoch=len(rows), dataset_power=0.5, class_power=0.5)
    model = CrossTrainedModel(list(table.label_sets), args.backbone, kwargs).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(SparseStage.trainable_parameters(model), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    stage = SparseStage(model, table, rows, config, DistributedContext(), torch.device("cpu"), generator)
    scheduler = _make_scheduler(optimizer, config, stage.steps_per_epoch * (2 * args.repeats + 2))
    # The bare loop's data: the same crops, gathered once in memory, labels of label set 0.
    bare_crops = torch.from_numpy(table.crops[rows])
    bare_labels = torch.from_numpy(np.where(table.labels[rows, 0] >= 0, table.labels[rows, 0], 0))
    events = []

    def method_epoch(epoch: int) -> int:
        stats = train_one_epoch(stage, optimizer, epoch, 1, config, scheduler, progress=events.append)
        return stats["samples"]

    print(f"{len(rows)} crops, {len(table.label_sets)} label sets, backbone {args.backbone} {kwargs}, "
          f"batch {config.batch_size}, {args.threads} threads")
    method_epoch(0)  # warm-up both (allocator, kernels)
    bare_epoch(model, optimizer, bare_crops, bare_labels, config.batch_size)
    bare, method = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        count = bare_epoch(model, optimizer, bare_crops, bare_labels, config.batch_size)
        bare.append(count / (time.perf_counter() - start))
        start = time.perf_counter()
        count = method_epoch(repeat + 1)
        method.append(count / (time.perf_counter() - start))
    # Best of the alternating runs (timeit's convention): on a shared machine the fastest run is the
    # least disturbed one; the medians are printed too.
    bare_rate, method_rate = max(bare), max(method)
    print(f"bare training loop:  {bare_rate:7.1f} samples/s best, {statistics.median(bare):7.1f} median "
          f"(runs: {', '.join(f'{r:.0f}' for r in bare)})")
    print(f"train_one_epoch:     {method_rate:7.1f} samples/s best, {statistics.median(method):7.1f} median "
          f"(runs: {', '.join(f'{r:.0f}' for r in method)})")
    print(f"ratio train_one_epoch / bare: {method_rate / bare_rate:.2f} best-of (target >= 0.85), "
          f"{statistics.median(method) / statistics.median(bare):.2f} median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
