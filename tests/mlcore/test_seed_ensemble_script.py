"""benchmarks/seed_ensemble.py: models of several seeds and their averaged-logit ensembles on a config's validation nuclei."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlcore.checkpoint import load_checkpoint
from mlcore.cli import read_datasets
from mlcore.concepts import class_names_of, load_concept_map, model_completion
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
        figures = written["figures"][view]
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


def test_left_out_scores_the_concept_completion_of_an_unseen_datasets_nuclei(tmp_path):
    colon = generate_dataset(tmp_path / "colon", format="seed", n_images=3, nuclei_per_image=20,
                             class_names=["epithelial", "inflammatory"], seed=0, size=(128, 128))
    lung = generate_dataset(tmp_path / "lung", format="seed", n_images=2, nuclei_per_image=20,
                            class_names=["tumour", "lymphocyte"], seed=1, size=(128, 128))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"datasets": [{"name": "colon", "format": "seed", "path": str(colon)},
                                                    {"name": "lung", "format": "seed", "path": str(lung)}],
                                       "model": {"width": 4}}))
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps({"concepts": {"tumour": {"colon": ["epithelial"], "lung": ["tumour"]},
                                                 "inflammatory": {"colon": ["inflammatory"], "lung": ["lymphocyte"]}}}))
    specs, config, _ = load_config_file(config_path)
    table = build_table(read_datasets(specs), crop_size=config.crop_spec)
    without_lung = table.subset(np.flatnonzero(table.dataset_index == 0)).with_label_sets([table.label_sets[0]])
    checkpoints = []
    for seed in (0, 1):
        run = TrainConfig.from_dict({**config.to_dict(), "seed": seed, "epochs": 1, "samples_per_epoch": 64,
                                     "batch_size": 32})
        train_all(without_lung, config=run, stages=["sparse"], out_dir=tmp_path / f"seed{seed}")
        checkpoints.append(tmp_path / f"seed{seed}" / "model.pt")

    done = run_script(tmp_path, config_path, *checkpoints, "--left-out", "lung", "--concepts", concepts,
                      "--out", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((tmp_path / "out.json").read_text())
    lung_rows = np.flatnonzero(table.dataset_index == 1)
    truth = class_names_of(table.labels[lung_rows, 1], table.label_sets[1].classes)
    concept_map = load_concept_map(concepts)
    for seed, path in enumerate(checkpoints):
        expected = model_completion(load_checkpoint(path).model, table.crops[lung_rows], truth, "lung", concept_map,
                                    tta=True)
        assert written["figures"]["TTA"]["1"][str(seed)]["mean"] == pytest.approx(expected["mean"], abs=1e-9)
        assert written["figures"]["TTA"]["1"][str(seed)]["into colon"] == pytest.approx(expected["mean"], abs=1e-9)
    assert written["nuclei"] == len(lung_rows) and set(written["figures"]["TTA"]["2"]) == {"0+1"}
    assert "| mean | " in done.stdout

    trained_with_it = run_script(tmp_path, config_path, *checkpoints, "--left-out", "colon", "--concepts", concepts)
    assert trained_with_it.returncode != 0 and "were trained with its label set colon" in trained_with_it.stderr
