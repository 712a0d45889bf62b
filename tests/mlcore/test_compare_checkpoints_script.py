"""benchmarks/compare_checkpoints.py: two checkpoints on a config's validation nuclei, one row per label set."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from mlcore.checkpoint import load_checkpoint
from mlcore.data import split_by_group
from mlcore.train import compare_models
from tests.mlcore.helpers import config_of_generated_datasets, tiny_models_by_seed

ROOT = Path(__file__).resolve().parents[2]


def test_the_script_prints_what_compare_models_finds_on_the_configs_validation_split(tmp_path):
    config_path, config, table = config_of_generated_datasets(
        tmp_path, {"colon": ["epithelial", "inflammatory"]}, split={"val_fraction": 0.5, "seed": 0})
    checkpoints = tiny_models_by_seed(table, config, (0, 1), tmp_path)

    done = subprocess.run([sys.executable, "benchmarks/compare_checkpoints.py", *map(str, checkpoints), "--config",
                           str(config_path), "--cache", str(tmp_path / "cache"), "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    _, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    first, second = (load_checkpoint(path).model for path in checkpoints)
    row = compare_models(first, second, table, val_rows)["colon"]
    low, high = row["difference_interval"]
    assert (f"| colon | {row['n']} | {row['macro_f1']:.3f} | {row['previous_macro_f1']:.3f} | "
            f"{row['macro_f1'] - row['previous_macro_f1']:+.3f} | {low:+.3f} to {high:+.3f} |") in done.stdout
    assert row["n"] == int(np.isin(val_rows, np.flatnonzero(table.labels[:, 0] >= 0)).sum())
