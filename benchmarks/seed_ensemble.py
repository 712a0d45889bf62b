"""Ensembles of training seeds on the validation nuclei of the real samples: does averaging models cut the seed's say?

    python benchmarks/seed_ensemble.py RUN/seed0/cross/stage3.pt RUN/seed1/cross/stage3.pt ... [--size 2]

The checkpoints are models of one setting that differ only by their training seed (``benchmarks/train_real.py
--seeds N`` writes them). Reads the config's datasets and its by-group validation split (as ``train_real.py``
draws it), computes each model's logits of the validation nuclei once, with one view and with test-time
augmentation, and scores every combination of ``--size`` models: an ensemble averages its members' logits (both
branches), as TTA averages the views. Prints per label set the macro-F1 of one model and of an ensemble, mean ±
sd (worst) over all models or combinations, and each ensemble against the mean of its members and against the
best of them; ``--out`` writes every combination's figures.

    python benchmarks/seed_ensemble.py RUN/seed0/consep/stage3.pt RUN/seed1/consep/stage3.pt --left-out consep

scores, instead, the concept completion of a dataset the models never saw (the checkpoints of
``benchmarks/leave_one_out.py`` runs without it): its mean over the concept cells and per target label set.

    python benchmarks/seed_ensemble.py RUN/seed*/single/consep/stage1.pt --against MERGED.json

prints, besides, each model and each ensemble against the same seeds' in an earlier ``--out`` file of another
setting (or a stored ``benchmarks/results/validation_seed_ensembles_*.json``): for instance the single-dataset
models of a dataset against the merged models, ensemble for ensemble.
``python -m mlcore train --ensemble N`` trains such an ensemble (mlcore.model.SeedEnsemble).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_files import setting_of  # noqa: E402
from benchmarks.train_real import CONCEPTS, DEFAULT_CONFIG, labelled_rows, log, machine_facts  # noqa: E402
from mlcore.concepts import class_names_of, concept_completion, load_concept_map  # noqa: E402
from mlcore.checkpoint import load_checkpoint  # noqa: E402
from mlcore.cli import read_datasets  # noqa: E402
from mlcore.config import load_config_file  # noqa: E402
from mlcore.data import build_table, split_by_group  # noqa: E402
from mlcore.predict import forward_logits, mean_outputs, predictions_from_logits  # noqa: E402
from mlcore.train import evaluation_rows, reports_from_logits  # noqa: E402

VIEWS = {"one view": False, "TTA": True}


def left_out_scoring(table, model, name: str, concept_map):
    """The rows of dataset ``name``'s nuclei of a known class, and a function from logits of those rows to the
    concept completion into the model's label sets (benchmarks/leave_one_out.py, mlcore.concepts): the mean over
    the cells, and each target label set's mean."""
    if name not in table.dataset_names:
        raise SystemExit(f"--left-out {name}: not a dataset of the config ({', '.join(table.dataset_names)})")
    column, rows = labelled_rows(table, table.dataset_names.index(name))
    source = table.label_sets[column]
    if source.name in {s.name for s in model.label_sets}:
        raise SystemExit(f"--left-out {name}: the models were trained with its label set {source.name}; give the "
                         "checkpoints of runs without it (benchmarks/leave_one_out.py)")
    truth = class_names_of(table.labels[rows, column], source.classes)

    def figures_of(logits, heads):
        predictions = predictions_from_logits(model, logits, heads)
        report = concept_completion({n: np.asarray(p.classes, dtype=object)[p.labels] for n, p in predictions.items()},
                                    truth, source.name, concept_map)
        into = {}
        for cell in report["cells"]:
            if cell["completion"] is not None:
                into.setdefault(cell["target"], []).append(cell["completion"])
        return {"mean": report["mean"], **{f"into {target}": statistics.mean(v) for target, v in into.items()}}
    return rows, figures_of


def figures_in(path: Path, size: int) -> dict:
    """{view: {"1": {seed: figures}, "<size>": {"a+b": figures}}} of an ``--out`` file, or of a stored results file
    that keeps several sizes (``size2``, ``size3``)."""
    stored = json.loads(path.read_text())
    if "figures" in stored:
        if stored.get("size") != size:
            raise SystemExit(f"--against {path.name}: its ensembles are of {stored.get('size')} models, not {size}")
        return stored["figures"]
    if f"size{size}" not in stored:
        raise SystemExit(f"--against {path.name}: no ensembles of {size} models in it")
    return stored[f"size{size}"]


def against_rows(scores: dict, other: dict, size: int) -> list[list[str]]:
    """Per label set and view: this setting's model minus the other's, seed for seed, and ensemble minus ensemble
    of the same seeds, mean (not behind / pairs)."""
    rows = []
    for view in VIEWS:
        for count in ("1", str(size)):
            mine, theirs = scores[view][count], other.get(view, {}).get(count, {})
            shared = [key for key in mine if key in theirs]
            names = [name for name in next(iter(mine.values())) if shared and name in theirs[shared[0]]]
            for name in names:
                differences = [mine[key][name] - theirs[key][name] for key in shared]
                rows.append([name, view, "one model" if count == "1" else f"{size} seeds",
                             f"{statistics.mean(differences):+.3f} ({sum(d >= 0 for d in differences)}/{len(differences)})"])
    return rows


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
    parser.add_argument("--left-out", metavar="DATASET",
                        help="score the concept completion of this dataset's nuclei instead of the validation "
                             "macro-F1: the checkpoints of benchmarks/leave_one_out.py runs without it")
    parser.add_argument("--concepts", default=str(CONCEPTS), help="with --left-out: the concept map")
    parser.add_argument("--out", type=Path, help="write every model's and combination's figures here (JSON)")
    parser.add_argument("--against", type=Path, metavar="RESULTS",
                        help="an earlier --out file of another setting (same seeds): print the differences")
    args = parser.parse_args()
    if not 2 <= args.size <= len(args.checkpoints):
        parser.error(f"--size {args.size}: give at least that many checkpoints, and a size of 2 or more")
    other = figures_in(args.against, args.size) if args.against else None   # read first: a bad file fails early
    torch.set_num_threads(args.threads)
    loaded = [load_checkpoint(path) for path in args.checkpoints]
    seeds = [checkpoint.config.seed for checkpoint in loaded]
    if len(set(seeds)) != len(seeds):
        parser.error(f"the checkpoints' training seeds repeat ({seeds}): an ensemble is of different seeds")
    settings = {json.dumps(setting_of(c.config.to_dict()), sort_keys=True) for c in loaded}
    if len(settings) > 1:
        parser.error("the checkpoints were trained with different settings, not only different seeds")
    if len({c.stage for c in loaded}) > 1:
        parser.error(f"the checkpoints end different stages ({sorted({c.stage for c in loaded})}): give one stage's")
    first = loaded[0].model.eval()
    specs, config, _ = load_config_file(args.config)
    table = build_table(read_datasets(specs, log), cache_dir=args.cache, crop_size=first.crop_spec)
    if args.left_out:
        rows, figures_of = left_out_scoring(table, first, args.left_out, load_concept_map(args.concepts))
    else:
        _, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
        rows = evaluation_rows(first, table, val_rows)

        def figures_of(logits, heads):
            return {name: report["macro_f1"] for name, report in reports_from_logits(first, table, rows, logits,
                                                                                       heads).items()}

    scores: dict = {}   # {view: {"1": {seed: {row: figure}}, "k": {"a+b": {...}}}}
    for view, tta in VIEWS.items():
        log(f"{view}: the logits of {len(rows)} nuclei, {len(loaded)} models")
        outputs = {seed: forward_logits(c.model.eval(), table.crops[rows], 512, "cpu", tta)
                   for seed, c in zip(seeds, loaded)}

        def score(members):
            return figures_of(*mean_outputs([outputs[s] for s in members]))
        scores[view] = {
            "1": {str(seed): score([seed]) for seed in seeds},
            str(args.size): {"+".join(map(str, members)): score(members)
                             for members in itertools.combinations(seeds, args.size)}}

    names = list(next(iter(scores["TTA"]["1"].values())))
    titles = ("one model", f"{args.size} seeds", "ensemble minus its members' mean", "ensemble minus its best member")
    header = ["completion" if args.left_out else "label set"] + [f"{title}, {view}" for view in VIEWS
                                                                 for title in titles]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in names:
        cells = [name]
        for view in VIEWS:
            single, ensembles = scores[view]["1"], scores[view][str(args.size)]
            over_mean = [figures[name] - statistics.mean(single[s][name] for s in members.split("+"))
                         for members, figures in ensembles.items()]
            over_best = [figures[name] - max(single[s][name] for s in members.split("+"))
                         for members, figures in ensembles.items()]
            cells += [summary([f[name] for f in single.values()]), summary([f[name] for f in ensembles.values()]),
                      *(f"{statistics.mean(g):+.3f} ({sum(x >= 0 for x in g)}/{len(g)})" for g in (over_mean, over_best))]
        print("| " + " | ".join(cells) + " |")
    if args.against:
        rows = against_rows(scores, other, args.size)
        if not rows:
            raise SystemExit(f"--against {args.against.name}: no seeds or label sets in common")
        print(f"\nthese models minus those of {args.against.name}, seed for seed (not behind / pairs):\n"
              "| label set | view | models | difference |\n|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    if args.out:
        args.out.write_text(json.dumps({"config": loaded[0].config.to_dict(), "seeds": seeds, "size": args.size,
                                        "stage": loaded[0].stage,
                                        "left_out": args.left_out, "nuclei": len(rows),
                                        "figures": scores,
                                        "machine": machine_facts()}, indent=1))
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
