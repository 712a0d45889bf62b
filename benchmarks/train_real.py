"""Single vs sparse vs cross-trained on the real data (CoNSeP + PanNuke + PanNuke breast + NuCLS).

    nohup .venv/bin/python benchmarks/train_real.py > benchmarks/out/train_real.log 2>&1 &

Reads ``benchmarks/configs/real.json`` (paths relative to it: ``../shared/data`` beside the repo),
draws one seeded by-group validation split and trains, with 2 torch threads:

- **single**: one model per dataset on its own label set only (the sparse stage on that dataset,
  same settings, epochs and schedule; an epoch is the merged model's epoch size capped at 4 passes
  over the dataset: ``mlcore.train.single_baseline_config``, as ``train --baseline single``);
- **sparse**: stage 1 of the merged model (the ``--baseline sparse`` model: same code, seed and
  data, so it is the cross run's stage-1 checkpoint; ``--separate-sparse`` trains it again);
- **cross**: all three stages.

Prints the wall time of each and a Markdown table per label set (accuracy, macro-F1, weighted-F1
on the validation split); writes ``results.json`` and the checkpoints under ``--out``. With
``--seeds 0 1 2`` it does all of that once per training seed (same split) and prints mean ± standard
deviation: on validation sets of 50-150 nuclei one seed moves macro-F1 by a few hundredths.

Beside it, a concept-completion table (``--concepts``, default ``benchmarks/configs/concepts.json``;
``--concepts none`` skips it): for each dataset's validation nuclei whose class belongs to a concept,
how often the sparse, stages 1+2 and cross models give them the concept's class in every other
label set (``mlcore.concepts``). ``benchmarks/leave_one_out.py`` scores the same on a dataset the
model never saw.

Runs of one setting made at different times are read back together with

    python benchmarks/train_real.py --combine benchmarks/results/a.json ... [--against benchmarks/results/b.json ...]

which prints each label set's and model's macro-F1 as mean ± sd (worst seed) over every seed found,
and with ``--against`` (runs of another setting) the difference seed by seed: its mean, in how many
seeds it is not negative, and its range. A model is shown where every run has it, so stage-1-only
runs (``--stages sparse``) combine with three-stage runs on their stage 1. ``--single-only`` trains a
setting's single-dataset models alone, for a setting whose merged runs are stored: its runs and the merged
runs of the same seeds combine as one run each, and the merged models' difference to the single ones is
printed seed by seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_files import (KERNEL_LIMITS, check_same_setting, difference_cell,  # noqa: E402
                                      machine_kind, machines_note, read_results, setting_changes, setting_of)
from mlcore.checkpoint import load_checkpoint  # noqa: E402
from mlcore.cli import read_datasets  # noqa: E402
from mlcore.concepts import ConceptMap, class_names_of, completion_markdown, load_concept_map, model_completion  # noqa: E402
from mlcore.config import STAGES, TrainConfig, load_config_file  # noqa: E402
from mlcore.data import build_table, split_by_group  # noqa: E402
from mlcore.train import evaluate, single_baseline_config, train_all  # noqa: E402
from mlcore.types import MISSING  # noqa: E402

BUDGET_S = 30 * 60
DEFAULT_CONFIG = ROOT / "benchmarks" / "configs" / "real.json"
CONCEPTS = ROOT / "benchmarks" / "configs" / "concepts.json"
# The model each stage's checkpoint is, as the metrics tables name it.
MODEL_OF_STAGE = {"sparse": "sparse", "correlation": "cross_stage2", "completion": "cross"}
MODEL_TITLES = {"single": "single", "single_tta": "single, TTA", "sparse": "sparse (stage 1)", "sparse_tta": "sparse, TTA",
                "cross_stage2": "stages 1+2", "cross_stage2_tta": "stages 1+2, TTA", "cross": "cross (1+2+3)",
                "cross_tta": "cross, TTA"}


def log(text: str) -> None:
    print(text, flush=True)


def machine_facts() -> dict:
    """What a run's figures depend on besides the config and seed. Training is deterministic on one
    machine, but PyTorch picks its CPU kernels by instruction set (AVX2, AVX-512, ...), and kernels
    that round differently send a run down another path within an epoch: the same seed on another
    machine is another draw. Results files keep these, so that figures from several sessions are
    compared seed by seed only where they ran on the same kind of machine.

    A machine can run an older kind's kernels (``results_files.KERNEL_LIMITS``): those variables, when
    set, are kept with the facts, since ``cpu_capability`` shows PyTorch's own kernels, not oneDNN's or MKL's."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    facts = {"cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
             "cores": os.cpu_count()}
    limits = {name: os.environ[name] for name in KERNEL_LIMITS if os.environ.get(name)}
    if limits:
        facts["kernel_limits"] = limits
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


def epoch_logger(name: str):
    """Print one line per finished epoch (the log stays readable under nohup)."""
    def progress(event: dict) -> None:
        if event["steps"] and event["step"] == event["steps"]:
            log(f"  [{name}] {event['stage']} epoch {event['epoch']}/{event['epochs']} loss {event['loss']:.4f}")
    return progress


def labelled_rows(table, dataset: int, rows: np.ndarray | None = None) -> tuple[int, np.ndarray] | None:
    """A dataset's label set column and its rows (of ``rows``, default all) with a known class; None if unlabelled."""
    rows = np.arange(len(table)) if rows is None else np.asarray(rows)
    rows = rows[table.dataset_index[rows] == dataset]
    for d in range(len(table.label_sets)):
        known = rows[table.labels[rows, d] != MISSING]
        if len(known):
            return d, known
    return None


def completion_by_stage(checkpoints: dict, table, sources: dict[str, tuple[int, np.ndarray]],
                        concept_map: ConceptMap, device: str = "cpu", tta: bool = False) -> dict[str, dict[str, dict]]:
    """``{model: {source: report}}``: the concept completion of each source's nuclei (``name: (label
    set column, rows)``) by each stage's checkpoint, into the model's other label sets. A source the
    concept map does not link with any of the model's label sets is left out. ``tta``: the last
    stage's model is scored with test-time augmentation too (``<model>_tta``), as ``--tta`` does."""
    out: dict[str, dict[str, dict]] = {}
    last = list(checkpoints)[-1]
    for stage, path in checkpoints.items():
        model = load_checkpoint(path, device).model
        model_sets = [s.name for s in model.label_sets]
        for with_tta in (False, True) if tta and stage == last else (False,):
            reports = {}
            for name, (column, rows) in sources.items():
                source = table.label_sets[column]
                if not concept_map.targets_for(source.name, model_sets):
                    continue
                truth = class_names_of(table.labels[rows, column], source.classes)
                reports[name] = model_completion(model, table.crops[rows], truth, source.name, concept_map,
                                                 device=device, tta=with_tta)
            out[MODEL_OF_STAGE[stage] + ("_tta" if with_tta else "")] = reports
    return out


def parse_override(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` with a JSON value (a bare word stays a string)."""
    key, sep, value = text.partition("=")
    if not sep or key not in TrainConfig.__dataclass_fields__:
        raise SystemExit(f"--set {text}: expected FIELD=VALUE with a TrainConfig field")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def run_once(table, config, train_rows, val_rows, out: Path, skip_single: bool, separate_sparse: bool,
             stages: tuple[str, ...] = STAGES, tta: bool = False, single_only: bool = False) -> dict:
    """Train single, sparse and cross once with ``config`` (its seed); return timings and metrics.
    ``single_only``: the single-dataset models alone. ``tta``: the last model, and each single-dataset model,
    is scored with test-time augmentation too (``<model>_tta``)."""
    results: dict = {"seed": config.seed, "seconds": {}, "metrics": {}}
    if not skip_single:
        single_metrics, single_tta_metrics, single_seconds = {}, {}, 0.0
        for index, name in enumerate(table.dataset_names):
            rows = np.flatnonzero(table.dataset_index == index)
            known = [d for d in range(len(table.label_sets)) if (table.labels[rows, d] != MISSING).any()]
            if not known:
                continue
            sub = table.subset(rows).with_label_sets([table.label_sets[d] for d in known])
            local_train = np.flatnonzero(np.isin(rows, train_rows))
            local_val = np.flatnonzero(np.isin(rows, val_rows))
            start = time.perf_counter()
            result = train_all(sub, config=single_baseline_config(config, len(local_train)), stages=("sparse",),
                               progress=epoch_logger(f"single {name}"), out_dir=out / "single" / name,
                               train_rows=local_train, val_rows=local_val)
            seconds = time.perf_counter() - start
            single_seconds += seconds
            single_metrics.update(result.metrics)
            if tta:
                single_tta_metrics.update(evaluate(result.model, sub, local_val, tta=True))
            log(f"single {name}: {seconds:.0f}s " + json.dumps({k: round(v['macro_f1'], 4) for k, v in result.metrics.items()}))
        results["metrics"]["single"] = single_metrics
        if tta:
            results["metrics"]["single_tta"] = single_tta_metrics
        results["seconds"]["single"] = single_seconds
    if single_only:
        return results

    if separate_sparse:
        start = time.perf_counter()
        result = train_all(table, config=config, stages=("sparse",), progress=epoch_logger("sparse"),
                           out_dir=out / "sparse", train_rows=train_rows, val_rows=val_rows)
        results["seconds"]["sparse"] = time.perf_counter() - start
        results["metrics"]["sparse"] = result.metrics

    start = time.perf_counter()
    result = train_all(table, config=config, stages=stages, progress=epoch_logger("cross"),
                       out_dir=out / "cross", train_rows=train_rows, val_rows=val_rows)
    cross_seconds = time.perf_counter() - start
    results["seconds"]["cross"] = cross_seconds
    results["seconds"]["cross_per_stage"] = {
        stage: round(sum(h["seconds"] for h in result.history if h["stage"] == stage), 1) for stage in stages}
    if stages[-1] == "completion":
        results["metrics"]["cross"] = result.metrics
    if "correlation" in stages:
        results["metrics"]["cross_stage2"] = result.stage_metrics["correlation"]
    if not separate_sparse and "sparse" in stages:
        results["metrics"]["sparse"] = result.stage_metrics["sparse"]
        results["seconds"]["sparse"] = results["seconds"]["cross_per_stage"]["sparse"]
    if tta:
        key = {"sparse": "sparse", "correlation": "cross_stage2", "completion": "cross"}[stages[-1]] + "_tta"
        results["metrics"][key] = evaluate(result.model, table, val_rows, tta=True)
    results["history"] = result.history
    log(f"seed {config.seed}: cross-trained, all three stages: {cross_seconds:.0f}s wall "
        f"({cross_seconds / BUDGET_S:.2f} of the 30-minute budget); epoch time per stage "
        f"{results['seconds']['cross_per_stage']}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "train_real")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="training seeds (initialisation, sampling, augmentation; the split stays fixed); "
                             "with several, the table shows mean and standard deviation over them")
    parser.add_argument("--skip-single", action="store_true", help="train the cross model only")
    parser.add_argument("--single-only", action="store_true",
                        help="train the single-dataset models only (for a setting whose merged runs are stored)")
    parser.add_argument("--separate-sparse", action="store_true", help="train the sparse baseline on its own")
    parser.add_argument("--concepts", default=str(CONCEPTS),
                        help="concept map for the completion table of the validation nuclei ('none': no table)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the merged model's stages (default: all three); --stages sparse screens an input "
                             "or augmentation setting at a third of the cost")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field (JSON value) over the config file's, e.g. crop_mask=true")
    parser.add_argument("--tta", action="store_true",
                        help="also evaluate each merged model with test-time augmentation (8 symmetries)")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="RESULTS",
                        help="print the macro-F1 of earlier runs' results.json files (one setting) instead of training")
    parser.add_argument("--against", nargs="+", type=Path, default=[], metavar="RESULTS",
                        help="with --combine: runs of another setting, to print the difference seed by seed")
    args = parser.parse_args()
    if args.combine:
        return print_combined(args.combine, args.against)
    if args.against:
        parser.error("--against goes with --combine")
    if args.single_only and args.skip_single:
        parser.error("--single-only and --skip-single leave nothing to train")

    data = ROOT.parent / "shared" / "data"
    if args.config == DEFAULT_CONFIG and not data.is_dir():
        log(f"skipped: the real data is not at {data}")
        return 0
    torch.set_num_threads(args.threads)
    specs, config, _ = load_config_file(args.config)
    # Through from_dict, as a config file is read: "lr=0.002" becomes stage 1's learning rate, and so on.
    config = TrainConfig.from_dict({**config.to_dict(), **dict(map(parse_override, args.overrides))})
    config.num_threads = args.threads
    # The completion table scores the merged models: none without them.
    concept_map = load_concept_map(args.concepts) if args.concepts != "none" and not args.single_only else None
    started = time.perf_counter()
    datasets = read_datasets(specs, log)
    table = build_table(datasets, cache_dir=args.out / "cache", crop_size=config.crop_spec)
    train_rows, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    if concept_map is not None:
        concept_map.check({s.name: s.classes for s in table.label_sets})
        sources = {name: found for index, name in enumerate(table.dataset_names)
                   if (found := labelled_rows(table, index, val_rows)) is not None}
    log(f"{len(table)} nuclei ({len(train_rows)} train, {len(val_rows)} validation) "
        f"[{time.perf_counter() - started:.0f}s]; config: {json.dumps(config.to_dict())}")

    runs = []
    for seed in args.seeds:
        out = args.out if len(args.seeds) == 1 else args.out / f"seed{seed}"
        runs.append(run_once(table, replace(config, seed=seed), train_rows, val_rows, out, args.skip_single,
                             args.separate_sparse, tuple(args.stages), args.tta, args.single_only))
        if concept_map is not None:
            checkpoints = {stage: out / "cross" / f"stage{index + 1}.pt" for index, stage in enumerate(STAGES)
                           if stage in args.stages}
            runs[-1]["completion"] = completion_by_stage(checkpoints, table, sources, concept_map, tta=args.tta)
        if len(args.seeds) > 1:
            log(markdown_table([runs[-1]["metrics"]], [s.name for s in table.label_sets]))
            if concept_map is not None:
                log(completion_table([runs[-1]]))

    log("")
    if not args.single_only:
        cross = [run["seconds"]["cross"] for run in runs]
        log(f"cross-trained, all three stages: {statistics.mean(cross):.0f}s wall per run (max {max(cross):.0f}s, "
            f"{max(cross) / BUDGET_S:.2f} of the 30-minute budget)")
    if "single" in runs[0]["seconds"]:
        log(f"single-dataset models: {statistics.mean(run['seconds']['single'] for run in runs):.0f}s per run")
    log("")
    log(markdown_table([run["metrics"] for run in runs], [s.name for s in table.label_sets]))
    if concept_map is not None:
        log("\nconcept completion of the validation nuclei into the other label sets "
            f"({args.concepts}):\n" + completion_table(runs))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"config": config.to_dict(), "seeds": args.seeds, "concepts": args.concepts, "runs": runs,
               "machine": machine_facts()}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    log(f"\nwrote {args.out / 'results.json'}; total {time.perf_counter() - started:.0f}s")
    return 0


def completion_table(runs: list[dict], first_column: str = "source") -> str:
    """The runs' ``completion`` ({model: {source: report}}) per model, over seeds (mlcore.concepts)."""
    models = [(key, title) for key, title in MODEL_TITLES.items() if key != "single"]
    return completion_markdown([run["completion"] for run in runs], models, first_column)


def markdown_table(runs: list[dict], names: list[str]) -> str:
    """Per label set and model: the metrics of one run, or mean ± standard deviation over several.

    "macro-F1 vs single" is the mean of the per-seed differences (each seed's cross or sparse model against the
    same seed's single model; a model scored with TTA against the single model scored with TTA, where the run
    has it), with the number of seeds where it is not negative."""
    titles = MODEL_TITLES
    models = [m for m in titles if m in runs[0]]
    several = len(runs) > 1

    def cell(values: list[float]) -> str:
        if not several:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    lines = ["| label set | n val | model | accuracy | macro-F1 | weighted-F1 | macro-F1 vs single |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        for model in models:
            reports = [run[model].get(name) for run in runs]
            if any(r is None for r in reports):
                continue
            delta = ""
            # Like for like: a model scored with TTA against the single model scored with TTA.
            single = "single_tta" if model.endswith("_tta") else "single"
            if not model.startswith("single") and all(name in run.get(single, {}) for run in runs):
                differences = [r["macro_f1"] - run[single][name]["macro_f1"] for r, run in zip(reports, runs)]
                delta = f"{statistics.mean(differences):+.3f}"
                if several:
                    delta += f" ({sum(d >= 0 for d in differences)}/{len(differences)} seeds >= 0)"
            lines.append(f"| {name} | {reports[0]['n']} | {titles[model]} | "
                         f"{cell([r['accuracy'] for r in reports])} | {cell([r['macro_f1'] for r in reports])} | "
                         f"{cell([r['weighted_f1'] for r in reports])} | {delta} |")
    return "\n".join(lines)


def combine_runs(paths: list[Path]) -> dict:
    """The runs of several results files of one setting: ``{"setting", "runs"}`` with the seeds in order,
    each run carrying its file's machine. Two runs of one seed are one run when their models differ (a
    ``--single-only`` run beside the merged one) and come from one kind of machine."""
    setting, runs, origin = None, {}, {}
    for path in paths:
        results = read_results(path, "runs")
        if setting is None:
            setting = setting_of(results["config"])
        else:
            check_same_setting(path, setting_of(results["config"]), paths[0], setting)
        machine = results.get("machine")
        for run in results["runs"]:
            seed = run["seed"]
            if seed not in runs:
                origin[seed], runs[seed] = path, {**run, "machine": machine}
                continue
            earlier = runs[seed]
            if earlier["metrics"].keys() & run["metrics"].keys():
                raise ValueError(f"{path}: seed {seed} is also in {origin[seed]}")
            if machine_kind(earlier["machine"]) != machine_kind(machine):
                raise ValueError(f"{path}: seed {seed} is also in {origin[seed]}, from another kind of machine")
            earlier["metrics"] = {**earlier["metrics"], **run["metrics"]}
            earlier["seconds"] = {**earlier["seconds"], **run["seconds"]}
    return {"setting": setting, "runs": [runs[seed] for seed in sorted(runs)]}


def macro_f1_by_seed(runs: list[dict]) -> dict[tuple[str, str], dict[int, float]]:
    """``{(label set, model): {seed: macro-F1}}`` for the models every run has."""
    models = [m for m in MODEL_TITLES if all(m in run["metrics"] for run in runs)]
    found: dict[tuple[str, str], dict[int, float]] = {}
    for run in runs:
        for model in models:
            for name, report in run["metrics"][model].items():
                found.setdefault((name, model), {})[run["seed"]] = report["macro_f1"]
    return found


def combined_table(results: dict, against: dict | None = None) -> str:
    """Macro-F1 per label set and model over the seeds; with ``against``, its figures and the difference."""
    def spread(by_seed: dict[int, float]) -> str:
        values = list(by_seed.values())
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (worst {min(values):.3f})"

    def seeds(by_seed: dict[int, float]) -> str:
        return ",".join(map(str, sorted(by_seed)))

    ours = macro_f1_by_seed(results["runs"])
    theirs = macro_f1_by_seed(against["runs"]) if against is not None else None
    n_val = {name: report["n"] for run in results["runs"] for model in run["metrics"].values()
             for name, report in model.items()}
    order = list(dict.fromkeys(name for name, _ in ours))
    keys = sorted((key for key in ours if theirs is None or key in theirs),
                  key=lambda key: (order.index(key[0]), list(MODEL_TITLES).index(key[1])))
    if theirs is None:
        lines = ["| label set | n val | model | seeds | macro-F1, mean ± sd (worst) |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {n_val[name]} | {MODEL_TITLES[model]} | {seeds(ours[name, model])} | "
                  f"{spread(ours[name, model])} |" for name, model in keys]
    else:
        lines = ["| label set | n val | model | seeds | macro-F1, mean ± sd (worst) | against: seeds | against: "
                 "macro-F1 | difference seed by seed |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {n_val[name]} | {MODEL_TITLES[model]} | {seeds(ours[name, model])} | "
                  f"{spread(ours[name, model])} | {seeds(theirs[name, model])} | {spread(theirs[name, model])} | "
                  f"{difference_cell(ours[name, model], theirs[name, model])} |" for name, model in keys]
    return "\n".join(lines)


def print_combined(paths: list[Path], against_paths: list[Path]) -> int:
    results = combine_runs(paths)
    against = combine_runs(against_paths) if against_paths else None
    if against is not None:
        log("the difference is --combine minus --against: "
            + (setting_changes(results["setting"], against["setting"]) or "the same setting"))
    log("validation macro-F1\n" + combined_table(results, against))
    if all("single" in run["metrics"] for run in results["runs"]) and len(results["runs"]) > 1:
        names = list(dict.fromkeys(name for run in results["runs"] for name in run["metrics"]["single"]))
        log("\nagainst the single-dataset models, seed by seed\n"
            + markdown_table([run["metrics"] for run in results["runs"]], names))
    machines = [run["machine"] for r in (results, against) if r is not None for run in r["runs"]]
    if (note := machines_note(machines)) is not None:
        log(note)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:   # a results file that does not fit: say which, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
