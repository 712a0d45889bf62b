"""train -> infer -> evaluate through ``python -m mlcore`` on a small slice of the real data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.mlcore.helpers import assert_report_is_its_confusion

pytestmark = pytest.mark.slow  # trains on the real samples in a new process

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "mlcore", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    config = {
        "datasets": [
            # 20 CoNSeP patches = tiles train_1 and train_10 (split by tile); a few images elsewhere
            {"name": "consep", "format": "hovernet", "path": str(shared_data / "consep"), "max_images": 20},
            {"name": "pannuke", "format": "coco", "path": str(shared_data / "pannuke"), "max_images": 4},
            {"name": "breast", "format": "coco", "path": str(shared_data / "pannuke_breast_binary"), "max_images": 4},
            {"name": "nucls", "format": "seed", "path": "nucls_link", "max_images": 3},
        ],
        "model": {"backbone": "small", "width": 4},
        "batch_size": 64, "split": {"val_fraction": 0.3, "seed": 0}, "correlation_views": 1,
        "sampling": {"samples_per_epoch": 512},
        "cache_dir": str(work / "cache"),
    }
    (work / "nucls_link").symlink_to(shared_data / "nucls")   # a relative path, resolved against the config
    (work / "config.json").write_text(json.dumps(config))
    # The checkout first, and the caller's own path after it (where a package may live outside site-packages).
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "2"}
    train = run_cli("train", "--config", work / "config.json", "--out", work / "run", "--epochs", "1",
                    "--device", "cpu", "--seed", "3", env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    return work, env, train


def test_train_writes_model_metrics_and_stage_checkpoints(trained):
    work, _, train = trained
    run = work / "run"
    assert {"model.pt", "metrics.json", "stage1.pt", "stage2.pt", "stage3.pt"} <= {p.name for p in run.iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["label_sets"]) == {"consep", "pannuke", "breast", "nucls"}
    for report in metrics["label_sets"].values():
        assert_report_is_its_confusion(report)
    assert "completion 1/1" in train.stderr   # the tqdm bar names stage and epoch
    # Scored with TTA too by default, as infer and evaluate classify: the figures of the in-process evaluate.
    assert set(metrics["label_sets_tta"]) == set(metrics["label_sets"])
    assert "validation, one view:" in train.stderr
    assert "validation, test-time augmentation (8 views" in train.stderr
    from mlcore.checkpoint import load_checkpoint
    from mlcore.cli import read_datasets
    from mlcore.config import load_config_file
    from mlcore.data import build_table, split_by_group
    from mlcore.train import evaluate

    specs, config, _ = load_config_file(work / "config.json")
    model = load_checkpoint(run / "model.pt").model
    table = build_table(read_datasets(specs, lambda text: None), crop_size=model.crop_spec)
    _, val_rows = split_by_group(table, config.val_fraction, 3)   # --seed 3 sets the split's seed too
    assert len(val_rows) == metrics["split"]["validation"]
    expected = evaluate(model, table, val_rows, tta=True)
    for name, report in metrics["label_sets_tta"].items():
        assert report["n"] == expected[name]["n"]
        assert report["macro_f1"] == pytest.approx(expected[name]["macro_f1"], abs=1e-9)
        assert report["confusion"] == expected[name]["confusion"]


def test_infer_writes_classes_a_preview_and_json(trained, shared_data):
    work, env, _ = trained
    out = work / "infer"
    image = shared_data / "nucls" / "images" / "train_2.png"
    mask = shared_data / "nucls" / "masks" / "train_2.npy"
    done = run_cli("infer", "--checkpoint", work / "run" / "model.pt", "--image", image, "--mask", mask,
                   "--out", out, "--label-set", "consep", "nucls", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # A preview of the first label set written; --overlays draws the others' (tests/mlcore/test_cli_infer_many.py).
    assert {p.name for p in out.iterdir()} == {"train_2_consep.npy", "train_2_consep_overlay.png", "train_2_nucls.npy",
                                              "train_2.json"}
    ids = np.unique(np.load(mask))
    ids = ids[ids > 0]
    classes = np.load(out / "train_2_nucls.npy")
    assert classes.shape == (len(ids), 2) and classes[:, 0].tolist() == ids.tolist()
    assert ((classes[:, 1] >= 0) & (classes[:, 1] < 4)).all()
    report = json.loads((out / "train_2.json").read_text())
    assert len(report["instances"]) == len(ids)
    labels = report["instances"][0]["labels"]
    assert set(labels) == {"consep", "nucls"}
    assert len(labels["consep"]["base_probs"]) == 4 and len(labels["consep"]["mlp_probs"]) == 4


def test_evaluate_json_and_class_mismatch(trained, shared_data):
    work, env, _ = trained
    done = run_cli("evaluate", "--checkpoint", work / "run" / "model.pt", "--dataset",
                   f"nucls=seed:{shared_data / 'nucls'}", "--label-set", "nucls", "--json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert set(report) == {"label_set", "tta", "n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion"}
    assert report["label_set"] == "nucls" and report["n"] == 353   # every labelled NuCLS nucleus
    assert np.array(report["confusion"]).sum() == 353
    assert sum(c["support"] for c in report["per_class"].values()) == 353
    # By default the same nuclei are scored on the mean over the 8 symmetries, as infer predicts (the in-process
    # evaluate's figure with tta=True); --no-tta scores one view.
    one_view = run_cli("evaluate", "--checkpoint", work / "run" / "model.pt", "--dataset",
                       f"nucls=seed:{shared_data / 'nucls'}", "--label-set", "nucls", "--json", "--no-tta", env=env)
    assert one_view.returncode == 0, one_view.stderr[-3000:]
    from mlcore.checkpoint import load_checkpoint
    from mlcore.cli import read_datasets
    from mlcore.config import DatasetSpec
    from mlcore.data import build_table
    from mlcore.train import evaluate

    model = load_checkpoint(work / "run" / "model.pt").model
    nucls = read_datasets([DatasetSpec("nucls", "seed", shared_data / "nucls", label_set="nucls")])
    table = build_table(nucls, [s for s in model.label_sets if s.name == "nucls"], crop_size=model.crop_spec)
    assert report["tta"] is True
    assert report["macro_f1"] == pytest.approx(evaluate(model, table, tta=True)["nucls"]["macro_f1"], abs=1e-9)
    assert json.loads(one_view.stdout)["tta"] is False
    assert json.loads(one_view.stdout)["macro_f1"] == pytest.approx(
        evaluate(model, table, tta=False)["nucls"]["macro_f1"], abs=1e-9)
    wrong = run_cli("evaluate", "--checkpoint", work / "run" / "model.pt", "--dataset",
                    f"nucls=seed:{shared_data / 'nucls'}", "--label-set", "consep", env=env)
    assert wrong.returncode == 2 and "must match" in wrong.stderr


def test_bad_config_names_the_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"datasets": [{"name": "x", "format": "tiff", "path": "."}]}))
    done = run_cli("train", "--config", tmp_path / "config.json", "--out", tmp_path / "o",
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "datasets[0].format" in done.stderr


def test_baseline_single_and_stage_by_stage_in_process(tmp_path, monkeypatch):
    """``--baseline single`` and ``--stage X`` (in-process: the same main() as the subprocess)."""
    from mlcore.cli import main
    from tests.mlcore.helpers import config_of_generated_datasets

    config_of_generated_datasets(tmp_path, {"one": ["a", "b"], "two": ["c", "d", "e"]}, batch_size=32,
                                 correlation_views=1, cache_dir=str(tmp_path / "cache"), split={"val_fraction": 0.25},
                                 sampling={"samples_per_epoch": 96})
    common = ["--config", str(tmp_path / "config.json"), "--epochs", "1", "--device", "cpu"]
    assert main(["train", *common, "--out", str(tmp_path / "single"), "--baseline", "single"]) == 0
    combined = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert set(combined["label_sets"]) == {"one", "two"}
    assert (tmp_path / "single" / "one" / "model.pt").is_file() and (tmp_path / "single" / "two" / "model.pt").is_file()

    out = tmp_path / "staged"
    assert main(["train", *common, "--out", str(out), "--stage", "correlation"]) == 2   # no stage1.pt yet
    assert main(["train", *common, "--out", str(out), "--stage", "sparse"]) == 0
    assert main(["train", *common, "--out", str(out), "--stage", "correlation"]) == 0
    assert main(["train", *common, "--out", str(out), "--stage", "completion"]) == 0
    from mlcore.checkpoint import load_checkpoint
    assert load_checkpoint(out / "model.pt").stage == "completion"
    assert {p.name for p in out.iterdir()} >= {"stage1.pt", "stage2.pt", "stage3.pt", "metrics.json"}


def test_evaluate_against_another_checkpoint_scores_both_on_the_same_nuclei(trained, shared_data):
    """``evaluate --against``: the CLI's side of the web app's version comparison (mlcore.train.compare_models)."""
    work, env, _ = trained
    dataset = f"nucls=seed:{shared_data / 'nucls'}"
    done = run_cli("evaluate", "--checkpoint", work / "run" / "model.pt", "--dataset", dataset, "--label-set", "nucls",
                   "--against", work / "run" / "stage1.pt", "--json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    from mlcore.checkpoint import load_checkpoint
    from mlcore.cli import read_datasets
    from mlcore.config import DatasetSpec
    from mlcore.data import build_table
    from mlcore.train import evaluate

    stage1 = load_checkpoint(work / "run" / "stage1.pt").model
    nucls = read_datasets([DatasetSpec("nucls", "seed", shared_data / "nucls", label_set="nucls")])
    table = build_table(nucls, [s for s in stage1.label_sets if s.name == "nucls"], crop_size=stage1.crop_spec)
    assert report["against"]["checkpoint"] == str(work / "run" / "stage1.pt")   # the path typed, not its file name
    assert report["against"]["previous_macro_f1"] == pytest.approx(evaluate(stage1, table)["nucls"]["macro_f1"], abs=1e-9)
    low, high = report["against"]["difference_interval"]
    assert low <= report["macro_f1"] - report["against"]["previous_macro_f1"] <= high

    itself = run_cli("evaluate", "--checkpoint", work / "run" / "model.pt", "--dataset", dataset, "--label-set",
                     "nucls", "--against", work / "run" / "model.pt", env=env)
    assert itself.returncode == 0, itself.stderr[-3000:]
    assert "difference +0.0000 (95% interval +0.0000 to +0.0000): within chance" in itself.stdout
    mixed = run_cli("evaluate", "--checkpoint", work / "run" / "model.pt", "--dataset", dataset, "--label-set",
                    "nucls", "--against", work / "run" / "model.pt", "--concept-map", ROOT / "benchmarks/configs/concepts.json",
                    env=env)
    assert mixed.returncode == 2 and "does not combine with --concept-map" in mixed.stderr
