"""Two checkpoints on the same validation nuclei of the real samples: which differences chance explains.

    python benchmarks/compare_checkpoints.py A.pt B.pt [--config benchmarks/configs/real.json]

Reads the config's datasets and its by-group validation split (as ``benchmarks/train_real.py`` and
``benchmarks/leave_one_out.py`` draw it), scores both checkpoints on the validation nuclei of every label set
they share (``mlcore.train.compare_models``, the web app's comparison of a new model version with the one it
replaces) and prints, per label set: n, both macro-F1, the difference and its paired bootstrap 95% interval.
Two seeds of one setting show how much of a seed-to-seed difference these validation sets can tell from chance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_real import DEFAULT_CONFIG, log  # noqa: E402
from mlcore.checkpoint import load_checkpoint  # noqa: E402
from mlcore.cli import read_datasets  # noqa: E402
from mlcore.config import load_config_file  # noqa: E402
from mlcore.data import build_table, split_by_group  # noqa: E402
from mlcore.train import compare_models  # noqa: E402


def verdict(low: float, high: float) -> str:
    return "higher beyond chance" if low > 0 else "lower beyond chance" if high < 0 else "within chance"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs=2, type=Path, metavar="CHECKPOINT")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "out" / "compare_cache",
                        help="the crop cache (as the other benchmarks keep theirs)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    first, second = (load_checkpoint(path).model.eval() for path in args.checkpoints)
    specs, config, _ = load_config_file(args.config)
    table = build_table(read_datasets(specs, log), cache_dir=args.cache, crop_size=first.crop_spec)
    _, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    compared = compare_models(first, second, table, val_rows)
    print(f"A = {args.checkpoints[0]}\nB = {args.checkpoints[1]}")
    print("| label set | n val | A macro-F1 | B macro-F1 | A - B | 95% interval | verdict |")
    print("|---|---|---|---|---|---|---|")
    for name, row in compared.items():
        low, high = row["difference_interval"]
        print(f"| {name} | {row['n']} | {row['macro_f1']:.3f} | {row['previous_macro_f1']:.3f} | "
              f"{row['macro_f1'] - row['previous_macro_f1']:+.3f} | {low:+.3f} to {high:+.3f} | {verdict(low, high)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
