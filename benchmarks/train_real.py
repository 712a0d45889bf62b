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
on the validation split); writes ``results.json`` and the checkpoints under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcore.cli import read_datasets  # noqa: E402
from mlcore.config import STAGES, load_config_file  # noqa: E402
from mlcore.data import build_table, split_by_group  # noqa: E402
from mlcore.train import single_baseline_config, train_all  # noqa: E402
from mlcore.types import MISSING  # noqa: E402

BUDGET_S = 30 * 60


def log(text: str) -> None:
    print(text, flush=True)


def epoch_logger(name: str):
    """Print one line per finished epoch (the log stays readable under nohup)."""
    def progress(event: dict) -> None:
        if event["steps"] and event["step"] == event["steps"]:
            log(f"  [{name}] {event['stage']} epoch {event['epoch']}/{event['epochs']} loss {event['loss']:.4f}")
    return progress


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "configs" / "real.json")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "train_real")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-single", action="store_true", help="train the cross model only")
    parser.add_argument("--separate-sparse", action="store_true", help="train the sparse baseline on its own")
    args = parser.parse_args()

    data = ROOT.parent / "shared" / "data"
    if not data.is_dir():
        log(f"skipped: the real data is not at {data}")
        return 0
    torch.set_num_threads(args.threads)
    specs, config, _ = load_config_file(args.config)
    config.num_threads = args.threads
    started = time.perf_counter()
    datasets = read_datasets(specs, log)
    table = build_table(datasets, cache_dir=args.out / "cache", crop_size=config.crop_size)
    train_rows, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    log(f"{len(table)} nuclei ({len(train_rows)} train, {len(val_rows)} validation) "
        f"[{time.perf_counter() - started:.0f}s]; config: {json.dumps(config.to_dict())}")
    results: dict = {"config": config.to_dict(), "seconds": {}, "metrics": {}}

    if not args.skip_single:
        single_metrics, single_seconds = {}, 0.0
        for index, name in enumerate(table.dataset_names):
            rows = np.flatnonzero(table.dataset_index == index)
            known = [d for d in range(len(table.label_sets)) if (table.labels[rows, d] != MISSING).any()]
            if not known:
                continue
            sub = table.subset(rows).with_label_sets([table.label_sets[d] for d in known])
            local_train = np.flatnonzero(np.isin(rows, train_rows))
            local_val = np.flatnonzero(np.isin(rows, val_rows))
            start = time.perf_counter()
            result = train_all(sub, config=single_baseline_config(config, len(local_train)), stages=("sparse",), progress=epoch_logger(f"single {name}"),
                               out_dir=args.out / "single" / name, train_rows=local_train, val_rows=local_val)
            seconds = time.perf_counter() - start
            single_seconds += seconds
            single_metrics.update(result.metrics)
            log(f"single {name}: {seconds:.0f}s " + json.dumps({k: round(v['macro_f1'], 4) for k, v in result.metrics.items()}))
        results["metrics"]["single"] = single_metrics
        results["seconds"]["single"] = single_seconds

    if args.separate_sparse:
        start = time.perf_counter()
        result = train_all(table, config=config, stages=("sparse",), progress=epoch_logger("sparse"),
                           out_dir=args.out / "sparse", train_rows=train_rows, val_rows=val_rows)
        results["seconds"]["sparse"] = time.perf_counter() - start
        results["metrics"]["sparse"] = result.metrics

    start = time.perf_counter()
    result = train_all(table, config=config, stages=STAGES, progress=epoch_logger("cross"),
                       out_dir=args.out / "cross", train_rows=train_rows, val_rows=val_rows)
    cross_seconds = time.perf_counter() - start
    results["seconds"]["cross"] = cross_seconds
    results["seconds"]["cross_per_stage"] = {
        stage: round(sum(h["seconds"] for h in result.history if h["stage"] == stage), 1) for stage in STAGES}
    results["metrics"]["cross"] = result.metrics
    results["metrics"]["cross_stage2"] = result.stage_metrics.get("correlation", {})
    if not args.separate_sparse:
        results["metrics"]["sparse"] = result.stage_metrics["sparse"]
        results["seconds"]["sparse"] = results["seconds"]["cross_per_stage"]["sparse"]
    results["history"] = result.history

    log("")
    log(f"cross-trained, all three stages: {cross_seconds:.0f}s wall ({cross_seconds / BUDGET_S:.2f} of the "
        f"30-minute budget); epoch time per stage {results['seconds']['cross_per_stage']}")
    if "single" in results["seconds"]:
        log(f"single-dataset models: {results['seconds']['single']:.0f}s")
    log("")
    log(markdown_table(results["metrics"], [s.name for s in table.label_sets]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    log(f"\nwrote {args.out / 'results.json'}; total {time.perf_counter() - started:.0f}s")
    return 0


def markdown_table(metrics: dict, names: list[str]) -> str:
    models = [m for m in ("single", "sparse", "cross_stage2", "cross") if m in metrics]
    titles = {"single": "single", "sparse": "sparse (stage 1)", "cross_stage2": "stages 1+2", "cross": "cross (1+2+3)"}
    lines = ["| label set | n val | model | accuracy | macro-F1 | weighted-F1 | macro-F1 vs single |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        reference = metrics.get("single", {}).get(name, {}).get("macro_f1")
        for model in models:
            m = metrics[model].get(name)
            if m is None:
                continue
            delta = f"{m['macro_f1'] - reference:+.3f}" if reference is not None and model != "single" else ""
            lines.append(f"| {name} | {m['n']} | {titles[model]} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
                         f"{m['weighted_f1']:.3f} | {delta} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
