"""Stage 3 alone, epoch by epoch: validation macro-F1 of each branch and of their mean.

    python benchmarks/stage3_curve.py --from benchmarks/out/train_real/seed0/cross --seed 0
    python benchmarks/stage3_curve.py --from ... --seed 0 --set pseudo_weight=0 --set dataset_power=1

Starts from the ``stage2.pt`` that ``benchmarks/train_real.py`` wrote (same config file, same split,
same training seed), runs the completion stage with the given config overrides, and after every
epoch prints, per label set, the macro-F1 of the final prediction (the mean of both branches), of
the base block alone and of the MLP alone, and how often the two branches name the same class.
It is how the README's account of what stage 3 does to CoNSeP was measured: whether the branches
stop disagreeing, and whether a setting moves the curve.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcore.checkpoint import load_checkpoint  # noqa: E402
from mlcore.cli import read_datasets  # noqa: E402
from mlcore.config import TrainConfig, load_config_file  # noqa: E402
from mlcore.data import build_table, split_by_group  # noqa: E402
from mlcore.metrics import f1_score  # noqa: E402
from mlcore.predict import predict  # noqa: E402
from mlcore.train import train_all  # noqa: E402
from mlcore.types import MISSING  # noqa: E402


def branch_scores(model, table, rows: np.ndarray) -> dict[str, dict[str, float]]:
    """Per label set: macro-F1 of the mean of both branches, of the base block and of the MLP, and
    the share of nuclei on which the two branches name the same class."""
    predictions = predict(model, table.crops[rows])
    out = {}
    for d, label_set in enumerate(table.label_sets):
        truth = table.labels[rows, d]
        known = truth != MISSING
        prediction = predictions[label_set.name]
        out[label_set.name] = {
            branch: f1_score(truth[known], probs[known].argmax(1), len(label_set.classes))
            for branch, probs in (("mean", prediction.probs), ("base", prediction.base_probs),
                                  ("mlp", prediction.mlp_probs))}
        out[label_set.name]["agree"] = float(np.mean(prediction.base_probs[known].argmax(1)
                                                     == prediction.mlp_probs[known].argmax(1)))
    return out


def parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if key not in TrainConfig.__dataclass_fields__:
        raise SystemExit(f"--set {text}: unknown config field {key!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", type=Path, required=True,
                        help="a train_real.py cross directory holding stage2.pt")
    parser.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "configs" / "real.json")
    parser.add_argument("--seed", type=int, default=0, help="the training seed of that run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field for this stage-3 run (JSON value), e.g. pseudo_weight=0")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "out" / "train_real" / "cache")
    args = parser.parse_args()

    stage2 = args.source / "stage2.pt"
    if not stage2.is_file():
        print(f"skipped: no {stage2} (run benchmarks/train_real.py first)")
        return 0
    specs, config, _ = load_config_file(args.config)
    config = replace(config, seed=args.seed, num_threads=args.threads, **dict(map(parse_override, args.overrides)))
    table = build_table(read_datasets(specs, print), cache_dir=args.cache, crop_size=config.crop_spec)
    train_rows, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    checkpoint = load_checkpoint(stage2)
    model = checkpoint.model
    names = [s.name for s in table.label_sets]
    print("epoch | " + " | ".join(f"{name}: mean base mlp agree" for name in names))

    def show(epoch: int) -> None:
        scores = branch_scores(model, table, val_rows)
        print(f"{epoch:5d} | " + " | ".join(
            " ".join(f"{scores[name][key]:.3f}" for key in ("mean", "base", "mlp", "agree")) for name in names),
            flush=True)
        model.train()  # predict() left it in eval mode; the next epoch starts with train() anyway

    show(0)
    train_all(table, config=config, stages=("completion",), init_checkpoint=checkpoint,
              progress=lambda e: show(e["epoch"]) if e["steps"] and e["step"] == e["steps"] else None,
              train_rows=train_rows, val_rows=val_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
