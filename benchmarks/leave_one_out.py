"""Leave one dataset out: train the merged model without it, then score how its nuclei complete
into the remaining taxonomies.

    nohup .venv/bin/python benchmarks/leave_one_out.py --seeds 0 1 2 3 4 > benchmarks/out/leave_one_out.log 2>&1 &
    python benchmarks/leave_one_out.py --leave-out nucls --stages sparse --epochs 2 --samples-per-epoch 4096

Reads ``benchmarks/configs/real.json`` (as ``benchmarks/train_real.py`` does: same table, same
by-group validation split of the remaining datasets) and the concept map
``benchmarks/configs/concepts.json`` (``mlcore.concepts``). For each labelled dataset (or those
named by ``--leave-out``) and each seed it trains the merged model on the other datasets only,
then scores every nucleus of the left-out dataset whose class belongs to a concept: how often the
model gives it one of the concept's classes in each remaining label set that has classes in that
concept (completion accuracy), with the sparse (stage 1), stages 1+2 and cross (1+2+3) checkpoints.
The left-out dataset's nuclei are never trained on, so it is a test on an unseen source (stain,
scanner, tissue and taxonomy alike).

Prints, per left-out dataset, the validation macro-F1 of the remaining label sets and the
completion table (mean ± sd and the worst seed when there are several), then all completion rows
together; writes ``results.json`` and the checkpoints under ``--out``.

Runs of one setting made at different times (one seed per session, say) are read back together with

    python benchmarks/leave_one_out.py --combine benchmarks/results/a.json benchmarks/results/b.json \
        [--against benchmarks/results/c.json ...]

which prints the same tables over every seed found, and with ``--against`` (runs of another
setting) the difference per left-out dataset, model and seed. The files must hold one setting
(the same config but for the seed and threads, and the same stages) and no seed twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_real import (CONCEPTS, DEFAULT_CONFIG, MODEL_TITLES, completion_by_stage,  # noqa: E402
                                   completion_table, epoch_logger, labelled_rows, log, machine_facts,
                                   markdown_table, parse_override)
from benchmarks.results_files import (check_same_setting, difference_cell, machines_note, read_results,  # noqa: E402
                                      setting_changes, setting_of)
from mlcore.cli import read_datasets  # noqa: E402
from mlcore.concepts import load_concept_map  # noqa: E402
from mlcore.config import STAGES, ConfigError, TrainConfig, load_config_file  # noqa: E402
from mlcore.data import build_table, split_by_group  # noqa: E402
from mlcore.train import train_all  # noqa: E402
from mlcore.types import MISSING  # noqa: E402


def without_dataset(table, left_out: int, train_rows: np.ndarray, val_rows: np.ndarray):
    """The table of every other dataset (only the label sets they have) and its local train/val rows."""
    rows = np.flatnonzero(table.dataset_index != left_out)
    kept_sets = [s for d, s in enumerate(table.label_sets) if (table.labels[rows, d] != MISSING).any()]
    sub = table.subset(rows).with_label_sets(kept_sets)
    return sub, np.flatnonzero(np.isin(rows, train_rows)), np.flatnonzero(np.isin(rows, val_rows))


def leave_out_once(table, index: int, config, stages, train_rows, val_rows, concept_map, out: Path,
                   tta: bool = False) -> dict:
    """Train without dataset ``index`` (``config``'s seed); score its nuclei's completion per stage."""
    name = table.dataset_names[index]
    sub, local_train, local_val = without_dataset(table, index, train_rows, val_rows)
    start = time.perf_counter()
    result = train_all(sub, config=config, stages=stages, progress=epoch_logger(f"without {name}"), out_dir=out,
                       train_rows=local_train, val_rows=local_val)
    seconds = time.perf_counter() - start
    source = labelled_rows(table, index)
    completion = completion_by_stage(result.stage_checkpoints, table, {name: source}, concept_map, tta=tta)
    metrics = {model: result.stage_metrics[stage] for stage, model in
               zip(STAGES, ("sparse", "cross_stage2", "cross")) if stage in result.stage_metrics}
    summary = {model: round(reports[name]["mean"], 4) for model, reports in completion.items()
               if reports.get(name, {}).get("mean") is not None}
    log(f"without {name}, seed {config.seed}: {seconds:.0f}s; mean completion {json.dumps(summary)}")
    return {"seed": config.seed, "seconds": seconds, "label_sets": [s.name for s in sub.label_sets],
            "metrics": metrics, "completion": completion}


def combine_results(paths: list[Path]) -> dict:
    """The runs of several results files of one setting, as one results dict (seeds in order)."""
    combined: dict | None = None
    origin: dict[tuple[str, int], Path] = {}
    for path in paths:
        results = read_results(path, "stages", "left_out")
        setting = setting_of(results["config"])
        if combined is None:
            combined = {"config": results["config"], "setting": setting, "stages": results["stages"],
                        "concepts": results["concepts"], "left_out": {}}
        elif results["stages"] != combined["stages"]:
            raise ValueError(f"{path}: stages {' '.join(results['stages'])}, but {paths[0]} has "
                             f"{' '.join(combined['stages'])}; combine runs of the same stages")
        else:
            check_same_setting(path, setting, paths[0], combined["setting"])
        for name, left in results["left_out"].items():
            into = combined["left_out"].setdefault(name, {**left, "runs": []})
            for run in left["runs"]:
                run = {**run, "machine": results.get("machine")}
                if (name, run["seed"]) in origin:
                    raise ValueError(f"{path}: seed {run['seed']} without {name} is also in "
                                     f"{origin[name, run['seed']]}")
                origin[name, run["seed"]] = path
                into["runs"].append(run)
    for left in combined["left_out"].values():
        left["runs"].sort(key=lambda run: run["seed"])
    return combined


def mean_completion(results: dict) -> dict[str, dict[str, dict[int, float]]]:
    """``{left-out dataset: {model: {seed: mean completion}}}``."""
    return {name: {model: {run["seed"]: run["completion"][model][name]["mean"] for run in left["runs"]
                           if run["completion"][model][name]["mean"] is not None}
                   for model in left["runs"][0]["completion"]}
            for name, left in results["left_out"].items()}


def summary_table(results: dict, against: dict | None = None) -> str:
    """Mean completion per left-out dataset and model over the seeds (and the mean of the datasets,
    over the seeds that have them all); with ``against``, the difference seed by seed."""
    ours = mean_completion(results)
    theirs = mean_completion(against) if against is not None else None

    # The mean row averages the datasets both sides left out, so that a run stopped before its last
    # dataset still compares like with like; one dataset alone has no mean row.
    averaged = [name for name in ours if theirs is None or name in theirs]

    def with_mean_row(by_name):
        if len(averaged) < 2:
            return by_name
        models = [m for m in MODEL_TITLES if all(m in by_name[name] for name in averaged)]
        seeds = set.intersection(*(set(by_name[name][models[0]]) for name in averaged)) if models else set()
        total = {m: {s: statistics.mean(by_name[name][m][s] for name in averaged) for s in sorted(seeds)}
                 for m in models}
        return {**by_name, f"mean of the {len(averaged)}": total}

    ours = with_mean_row(ours)
    theirs = with_mean_row(theirs) if theirs is not None else None
    models = [m for m in MODEL_TITLES if all(m in per_model for per_model in ours.values())
              and (theirs is None or all(m in per_model for per_model in theirs.values()))]

    def spread(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}, worst {min(values):.3f}"

    lines = ["| left out | seeds | " + " | ".join(MODEL_TITLES[m] for m in models) + " |",
             "|---|---|" + "---|" * len(models)]
    for name, per_model in ours.items():
        seeds = sorted(per_model[models[0]]) if models else []
        lines.append(f"| {name} | {','.join(map(str, seeds))} | "
                     + " | ".join(spread(list(per_model[m].values())) for m in models) + " |")
        if theirs is None or name not in theirs:
            continue
        cells = [difference_cell(per_model[m], theirs[name][m]) for m in models]
        common = sorted(set(per_model[models[0]]) & set(theirs[name][models[0]])) if models else []
        lines.append(f"| {name}: difference | {','.join(map(str, common))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_combined(paths: list[Path], against_paths: list[Path]) -> int:
    results = combine_results(paths)
    against = combine_results(against_paths) if against_paths else None
    for name, left in results["left_out"].items():
        log(f"without {name}: completion of its nuclei into the remaining label sets "
            f"(seeds {', '.join(str(run['seed']) for run in left['runs'])})\n"
            + completion_table(left["runs"], "left out") + "\n")
    if against is not None:
        log("the difference is --combine minus --against: "
            + (setting_changes(results["setting"], against["setting"]) or "the same setting"))
    log("mean completion of the left-out dataset's nuclei\n" + summary_table(results, against))
    machines = [run.get("machine") for r in (results, against) if r is not None
                for left in r["left_out"].values() for run in left["runs"]]
    if (note := machines_note(machines)) is not None:
        log(note)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--concepts", type=Path, default=CONCEPTS, help="the concept map (mlcore.concepts)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "leave_one_out")
    parser.add_argument("--leave-out", nargs="+", dest="leave_out", metavar="DATASET",
                        help="datasets to leave out, one at a time (default: every labelled one)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="stages to train, from the first: sparse | sparse correlation | all three (default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="training seeds; with several, mean ± sd and the worst seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="epochs for every stage (overrides the config)")
    parser.add_argument("--samples-per-epoch", type=int, dest="samples_per_epoch", help="overrides the config")
    parser.add_argument("--tta", action="store_true",
                        help="also score the last stage's model with test-time augmentation (8 symmetries)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field (JSON value), e.g. --set batch_size=64 (repeatable)")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="RESULTS",
                        help="print the tables of earlier runs' results.json files (one setting) instead of training")
    parser.add_argument("--against", nargs="+", type=Path, default=[], metavar="RESULTS",
                        help="with --combine: runs of another setting, to print the difference seed by seed")
    args = parser.parse_args()
    if args.combine:
        return print_combined(args.combine, args.against)
    if args.against:
        parser.error("--against goes with --combine")

    stages = tuple(args.stages)
    if stages != STAGES[:len(stages)]:
        parser.error(f"--stages must start with sparse and go in order ({' '.join(STAGES)}), got {' '.join(stages)}")
    data = ROOT.parent / "shared" / "data"
    if args.config == DEFAULT_CONFIG and not data.is_dir():
        log(f"skipped: the real data is not at {data}")
        return 0
    torch.set_num_threads(args.threads)
    concept_map = load_concept_map(args.concepts)
    specs, config, _ = load_config_file(args.config)
    overrides = dict(map(parse_override, args.overrides))
    if args.epochs is not None:
        overrides["epochs"] = {stage: args.epochs for stage in STAGES}
    if args.samples_per_epoch is not None:
        overrides["samples_per_epoch"] = args.samples_per_epoch
    # Through from_dict, so "--set epochs=2" means every stage, as in a config file, and errors name the field.
    config = TrainConfig.from_dict({**config.to_dict(), **overrides, "num_threads": args.threads})

    started = time.perf_counter()
    datasets = read_datasets(specs, log)
    table = build_table(datasets, cache_dir=args.out / "cache", crop_size=config.crop_spec)
    concept_map.check({s.name: s.classes for s in table.label_sets})
    train_rows, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    labelled = [name for index, name in enumerate(table.dataset_names) if labelled_rows(table, index) is not None]
    leave_out = args.leave_out or labelled
    for name in leave_out:
        if name not in labelled:
            parser.error(f"--leave-out {name}: not a labelled dataset of {args.config} ({', '.join(labelled)})")
    log(f"{len(table)} nuclei; leaving out {', '.join(leave_out)} in turn; stages {' '.join(stages)}; "
        f"config: {json.dumps(config.to_dict())} [{time.perf_counter() - started:.0f}s]")

    results = {"config": config.to_dict(), "concepts": str(args.concepts), "stages": list(stages),
               "seeds": args.seeds, "left_out": {}, "machine": machine_facts()}
    for name in leave_out:
        index = table.dataset_names.index(name)
        source_set = table.label_sets[labelled_rows(table, index)[0]].name
        remaining = [s.name for s in without_dataset(table, index, train_rows, val_rows)[0].label_sets]
        if len(remaining) < 2 and stages != ("sparse",):
            log(f"without {name}: only {remaining} left, the correlation stage needs two label sets; skipped")
            continue
        if not concept_map.targets_for(source_set, remaining):
            log(f"without {name}: {args.concepts} links label set {source_set!r} with none of {remaining}; skipped")
            continue
        runs = [leave_out_once(table, index, replace(config, seed=seed), stages, train_rows, val_rows, concept_map,
                               args.out / f"without_{name}" / f"seed{seed}", args.tta) for seed in args.seeds]
        results["left_out"][name] = {"label_set": source_set, "remaining": remaining, "runs": runs}
        log(f"\nwithout {name}: validation metrics of the remaining label sets\n"
            + markdown_table([run["metrics"] for run in runs], remaining))
        log(f"\nwithout {name}: completion of its nuclei into the remaining label sets\n"
            + completion_table(runs, "left out") + "\n")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))   # after every dataset: a long run keeps what it did

    if results["left_out"]:
        per_seed = [{model: {name: left["runs"][k]["completion"][model][name]
                             for name, left in results["left_out"].items()}
                     for model in results["left_out"][next(iter(results["left_out"]))]["runs"][k]["completion"]}
                    for k in range(len(args.seeds))]
        log("leave one dataset out: completion of the left-out dataset's nuclei into the other taxonomies "
            f"({len(args.seeds)} seed{'s' if len(args.seeds) > 1 else ''})\n"
            + completion_table([{"completion": c} for c in per_seed], "left out"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    log(f"\nwrote {args.out / 'results.json'}; total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, ValueError) as exc:   # a bad config, concept map or override: say which, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
