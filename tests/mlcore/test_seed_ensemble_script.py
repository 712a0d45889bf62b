"""benchmarks/seed_ensemble.py: models of several seeds and their averaged-logit ensembles on a config's validation nuclei."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlcore.checkpoint import load_checkpoint
from mlcore.cli import read_datasets
from mlcore.config import TrainConfig, load_config_file
from mlcore.data import build_table, split_by_group
from mlcore.predict import forward_logits
from mlcore.synthetic import generate_dataset
from mlcore.train import evaluate, evaluation_rows, reports_from_logits, train_all

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("seeds")
    root = generate_dataset(tmp_path / "colon", format="seed", n_images=4, nuclei_per_image=20,
                            class_names=["epithelial", "inflammatory", "stromal"], seed=0, size=(128, 128))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"datasets": [{"name": "colon", "format": "seed", "path": str(root)}],
                                       "model": {"width": 4}, "split": {"val_fraction": 0.5, "seed": 0}}))
    specs, config, _ = load_config_file(config_path)
    table = build_table(read_datasets(specs), crop_size=config.crop_spec)
    checkpoints = []
    for seed in (0, 1, 2):
        run = TrainConfig.from_dict({**config.to_dict(), "seed": seed, "epochs": 1, "samples_per_epoch": 64,
                                     "batch_size": 32})
        train_all(table, config=run, stages=["sparse"], out_dir=tmp_path / f"seed{seed}")
        checkpoints.append(tmp_path / f"seed{seed}" / "model.pt")
    return tmp_path, config_path, config, table, checkpoints


def run_script(tmp_path, config_path, *arguments):
    return subprocess.run([sys.executable, "benchmarks/seed_ensemble.py", *map(str, arguments), "--config",
                           str(config_path), "--cache", str(tmp_path / "cache"), "--threads", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_each_model_and_each_pair_is_scored_as_evaluate_and_averaged_logits_score_them(three_seeds):
    tmp_path, config_path, config, table, checkpoints = three_seeds
    done = run_script(tmp_path, config_path, *checkpoints, "--size", "2", "--out", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["seeds"] == [0, 1, 2] and written["size"] == 2
    _, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    models = [load_checkpoint(path).model for path in checkpoints]
    for view, tta in (("one view", False), ("TTA", True)):
        figures = written["macro_f1"][view]
        for seed, model in enumerate(models):
            assert figures["1"][str(seed)]["colon"] == pytest.approx(
                evaluate(model, table, val_rows, tta=tta)["colon"]["macro_f1"], abs=1e-9)
        assert sorted(figures["2"]) == ["0+1", "0+2", "1+2"]
        rows = evaluation_rows(models[0], table, val_rows)
        logits = [forward_logits(m, table.crops[rows], tta=tta)[0] for m in models[1:]]
        pair = reports_from_logits(models[0], table, rows, (logits[0] + logits[1]) / 2, [])
        assert figures["2"]["1+2"]["colon"] == pytest.approx(pair["colon"]["macro_f1"], abs=1e-9)
    assert "| colon | " in done.stdout and "2 seeds, TTA" in done.stdout


def test_a_seed_given_twice_is_refused(three_seeds):
    tmp_path, config_path, _, _, checkpoints = three_seeds
    done = run_script(tmp_path, config_path, checkpoints[0], checkpoints[0])
    assert done.returncode == 2 and "seeds repeat ([0, 0])" in done.stderr
