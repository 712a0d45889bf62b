"""Ensembles of training seeds on the validation nuclei of the real samples: does averaging models cut the seed's say?

    python benchmarks/seed_ensemble.py RUN/seed0/cross/stage3.pt RUN/seed1/cross/stage3.pt ... [--size 2]

The checkpoints are models of one setting that differ only by their training seed (``benchmarks/train_real.py
--seeds N`` writes them). Reads the config's datasets and its by-group validation split (as ``train_real.py``
draws it), computes each model's logits of the validation nuclei once, with one view and with test-time
augmentation, and scores every combination of ``--size`` models: an ensemble averages its members' logits (both
branches), as TTA averages the views. Prints per label set the macro-F1 of one model and of an ensemble, mean ±
sd (worst) over all models or combinations, and each ensemble against the mean of its members; ``--out`` writes
every combination's figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_real import DEFAULT_CONFIG, log, machine_facts  # noqa: E402
from mlcore.checkpoint import load_checkpoint  # noqa: E402
from mlcore.cli import read_datasets  # noqa: E402
from mlcore.config import load_config_file  # noqa: E402
from mlcore.data import build_table, split_by_group  # noqa: E402
from mlcore.predict import forward_logits  # noqa: E402
from mlcore.train import evaluation_rows, reports_from_logits  # noqa: E402

VIEWS = {"one view": False, "TTA": True}


def averaged(outputs: list[tuple[torch.Tensor, list[torch.Tensor]]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The members' backbone logits and correlation-head logits, each averaged over the members."""
    logits = torch.stack([o[0] for o in outputs]).mean(dim=0)
    heads = [torch.stack([o[1][d] for o in outputs]).mean(dim=0) for d in range(len(outputs[0][1]))]
    return logits, heads


def summary(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f} ({min(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT")
    parser.add_argument("--size", type=int, default=2, help="models per ensemble")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "out" / "compare_cache",
                        help="the crop cache (as the other benchmarks keep theirs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write every model's and combination's macro-F1 here (JSON)")
    args = parser.parse_args()
    if not 2 <= args.size <= len(args.checkpoints):
        parser.error(f"--size {args.size}: give at least that many checkpoints, and a size of 2 or more")
    torch.set_num_threads(args.threads)
    loaded = [load_checkpoint(path) for path in args.checkpoints]
    seeds = [checkpoint.config.seed for checkpoint in loaded]
    if len(set(seeds)) != len(seeds):
        parser.error(f"the checkpoints' training seeds repeat ({seeds}): an ensemble is of different seeds")
    settings = {json.dumps({k: v for k, v in c.config.to_dict().items() if k not in ("seed", "num_threads")},
                           sort_keys=True) for c in loaded}
    if len(settings) > 1:
        parser.error("the checkpoints were trained with different settings, not only different seeds")
    first = loaded[0].model.eval()
    specs, config, _ = load_config_file(args.config)
    table = build_table(read_datasets(specs, log), cache_dir=args.cache, crop_size=first.crop_spec)
    _, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    rows = evaluation_rows(first, table, val_rows)

    scores: dict = {}   # {view: {"1": {seed: {label set: macro-F1}}, "k": {"a+b": {...}}}}
    for view, tta in VIEWS.items():
        log(f"{view}: the logits of {len(rows)} validation nuclei, {len(loaded)} models")
        outputs = {seed: forward_logits(c.model.eval(), table.crops[rows], 512, "cpu", tta)
                   for seed, c in zip(seeds, loaded)}
        def macro_f1(members):
            reports = reports_from_logits(first, table, rows, *averaged([outputs[s] for s in members]))
            return {name: report["macro_f1"] for name, report in reports.items()}
        scores[view] = {
            "1": {str(seed): macro_f1([seed]) for seed in seeds},
            str(args.size): {"+".join(map(str, members)): macro_f1(members)
                             for members in itertools.combinations(seeds, args.size)}}

    names = [s.name for s in first.label_sets if s.name in {t.name for t in table.label_sets}]
    header = ["label set"] + [f"{title}, {view}" for view in VIEWS
                              for title in ("one model", f"{args.size} seeds", "ensemble minus its members' mean")]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in names:
        cells = [name]
        for view in VIEWS:
            single, ensembles = scores[view]["1"], scores[view][str(args.size)]
            gains = [figures[name] - statistics.mean(single[s][name] for s in members.split("+"))
                     for members, figures in ensembles.items()]
            cells += [summary([f[name] for f in single.values()]), summary([f[name] for f in ensembles.values()]),
                      f"{statistics.mean(gains):+.3f} ({sum(g >= 0 for g in gains)}/{len(gains)})"]
        print("| " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"config": loaded[0].config.to_dict(), "seeds": seeds, "size": args.size,
                                        "validation_nuclei": len(rows), "macro_f1": scores,
                                        "machine": machine_facts()}, indent=1))
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
