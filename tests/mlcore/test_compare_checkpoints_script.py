"""benchmarks/compare_checkpoints.py: two checkpoints on a config's validation nuclei, one row per label set."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mlcore.checkpoint import load_checkpoint
from mlcore.cli import read_datasets
from mlcore.config import TrainConfig, load_config_file
from mlcore.data import build_table, split_by_group
from mlcore.synthetic import generate_dataset
from mlcore.train import compare_models, train_all

ROOT = Path(__file__).resolve().parents[2]


def test_the_script_prints_what_compare_models_finds_on_the_configs_validation_split(tmp_path):
    root = generate_dataset(tmp_path / "colon", format="seed", n_images=4, nuclei_per_image=20,
                            class_names=["epithelial", "inflammatory"], seed=0, size=(128, 128))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"datasets": [{"name": "colon", "format": "seed", "path": str(root)}],
                                       "model": {"width": 4}, "split": {"val_fraction": 0.5, "seed": 0}}))
    specs, config, _ = load_config_file(config_path)
    table = build_table(read_datasets(specs), crop_size=config.crop_spec)
    checkpoints = []
    for seed in (0, 1):
        run = TrainConfig.from_dict({**config.to_dict(), "seed": seed, "epochs": 1, "samples_per_epoch": 64,
                                     "batch_size": 32})
        train_all(table, config=run, stages=["sparse"], out_dir=tmp_path / f"seed{seed}")
        checkpoints.append(tmp_path / f"seed{seed}" / "model.pt")

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
