"""benchmarks/seed_ensemble.py: models of several seeds and their averaged-logit ensembles on a config's validation nuclei."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlcore.checkpoint import load_checkpoint
from mlcore.concepts import class_names_of, load_concept_map, model_completion
from mlcore.data import split_by_group
from mlcore.predict import forward_logits
from mlcore.train import evaluate, evaluation_rows, reports_from_logits
from tests.mlcore.helpers import config_of_generated_datasets, tiny_models_by_seed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("seeds")
    config_path, config, table = config_of_generated_datasets(
        tmp_path, {"colon": ["epithelial", "inflammatory", "stromal"]}, split={"val_fraction": 0.5, "seed": 0})
    checkpoints = tiny_models_by_seed(table, config, (0, 1, 2), tmp_path)
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


def test_against_prints_each_model_and_ensemble_minus_the_same_seeds_of_another_setting(three_seeds):
    tmp_path, config_path, _, _, checkpoints = three_seeds
    done = run_script(tmp_path, config_path, *checkpoints[:2], "--out", tmp_path / "mine.json")
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "mine.json").read_text())["figures"]
    # Another setting, as a stored results file keeps it (sizes side by side): 0.05 below on one model, 0.02
    # above on the pair, and seed 1 missing from its single models.
    other = {view: {"1": {"0": {"colon": by["1"]["0"]["colon"] - 0.05}},
                    "2": {"0+1": {"colon": by["2"]["0+1"]["colon"] + 0.02}}} for view, by in figures.items()}
    (tmp_path / "other.json").write_text(json.dumps({"size2": other}))
    done = run_script(tmp_path, config_path, *checkpoints[:2], "--against", tmp_path / "other.json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "these models minus those of other.json" in done.stdout
    for view in ("one view", "TTA"):
        assert f"| colon | {view} | one model | +0.050 (1/1) |" in done.stdout
        assert f"| colon | {view} | 2 seeds | -0.020 (0/1) |" in done.stdout
    refused = run_script(tmp_path, config_path, *checkpoints, "--size", "3", "--against", tmp_path / "mine.json")
    assert refused.returncode == 1 and "its ensembles are of 2 models, not 3" in refused.stderr


def test_a_seed_given_twice_is_refused(three_seeds):
    tmp_path, config_path, _, _, checkpoints = three_seeds
    done = run_script(tmp_path, config_path, checkpoints[0], checkpoints[0])
    assert done.returncode == 2 and "seeds repeat ([0, 0])" in done.stderr


def test_left_out_scores_the_concept_completion_of_an_unseen_datasets_nuclei(tmp_path):
    config_path, config, table = config_of_generated_datasets(
        tmp_path, {"colon": ["epithelial", "inflammatory"], "lung": ["tumour", "lymphocyte"]})
    concepts = tmp_path / "concepts.json"
    concepts.write_text(json.dumps({"concepts": {"tumour": {"colon": ["epithelial"], "lung": ["tumour"]},
                                                 "inflammatory": {"colon": ["inflammatory"], "lung": ["lymphocyte"]}}}))
    without_lung = table.subset(np.flatnonzero(table.dataset_index == 0)).with_label_sets([table.label_sets[0]])
    checkpoints = tiny_models_by_seed(without_lung, config, (0, 1), tmp_path)

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
