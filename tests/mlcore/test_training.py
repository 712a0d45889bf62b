"""train_all on a tiny hand-made table: progress events, cancellation, stage checkpoints."""

import json

import numpy as np
import pytest

from mlcore.config import TrainConfig
from mlcore.train import train_all
from mlcore.types import Cancelled
from tests.mlcore.helpers import assert_report_is_its_confusion, separable_table, two_set_table

TINY = dict(backbone_kwargs={"width": 4}, batch_size=32, samples_per_epoch=None, epochs={"sparse": 2, "correlation": 2, "completion": 1},
            correlation_views=1, threshold=0.9)


@pytest.fixture(scope="module")
def table():
    return two_set_table(images_per_set=4, unlabelled_images=1)[0]


@pytest.mark.slow  # real training: all three stages
def test_three_stages_write_checkpoints_metrics_and_report_progress(table, tmp_path):
    events = []
    result = train_all(table, config=TrainConfig(**TINY), progress=events.append, out_dir=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"stage1.pt", "stage2.pt", "stage3.pt", "model.pt",
                                                    "metrics.json", "last.pt"}
    stages_seen = [e["stage"] for e in events]
    assert stages_seen.index("sparse") < stages_seen.index("correlation") < stages_seen.index("completion")
    batch_events = [e for e in events if e["steps"]]
    assert all(set(e) >= {"stage", "epoch", "epochs", "step", "steps", "loss", "epoch_loss", "eta_s"}
               for e in batch_events)
    assert all(e["loss"] is None or np.isfinite(e["loss"]) for e in batch_events)   # None: a batch too small
    assert [h["stage"] for h in result.history] == ["sparse", "sparse", "correlation", "correlation", "completion"]
    # Every epoch reports its last step, whose running mean is the epoch's loss in the history.
    ends = [e for e in batch_events if e["step"] == e["steps"]]
    assert [(e["stage"], e["epoch"]) for e in ends] == [(h["stage"], h["epoch"]) for h in result.history]
    assert [e["epoch_loss"] for e in ends] == pytest.approx([h["loss"] for h in result.history], rel=1e-9)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["label_sets"]) == {"A", "B"}
    assert set(metrics["stages"]) == {"sparse", "correlation", "completion"}
    for report in metrics["label_sets"].values():
        assert_report_is_its_confusion(report)
        assert "mlp_accuracy" in report
    assert metrics["label_sets"] == result.metrics
    assert bool(result.model.use_correlation)


def test_should_stop_cancels_cleanly_without_a_final_checkpoint(table, tmp_path):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled, match="stopped in stage sparse, epoch 2, step 2"):
        train_all(table, config=TrainConfig(**TINY), should_stop=should_stop, out_dir=tmp_path)
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "metrics.json").exists()
    assert calls["n"] == 4   # checked before every batch, stopped at the first True


def test_single_label_set_runs_the_sparse_stage_only(table):
    with pytest.raises(ValueError, match="at least two label sets"):
        train_all(table.with_label_sets([table.label_sets[0]]), config=TrainConfig(**TINY))
    result = train_all(table.with_label_sets([table.label_sets[0]]), config=TrainConfig(**TINY), stages=("sparse",))
    assert set(result.metrics) == {"A"} and not bool(result.model.use_correlation)


@pytest.mark.slow  # real training, 128 draws per epoch
def test_class_balanced_weighted_sampling_trains(table):
    config = TrainConfig(**{**TINY, "dataset_power": 0.5, "class_power": 0.5, "samples_per_epoch": 64})
    result = train_all(table, config=config, stages=("sparse",))
    assert [h["samples"] for h in result.history] == [64, 64]


def test_a_short_training_separates_nuclei_whose_class_is_their_colour(tmp_path):
    """The training learns: three colours of disks, 48 steps of the tiniest backbone, and the held-out
    images' nuclei are all but perfectly classified (a model that learns nothing scores about a third)."""
    table, label_set = separable_table(images=40)
    config = TrainConfig(backbone_kwargs={"width": 4}, batch_size=32, samples_per_epoch=512, epochs={"sparse": 3},
                         lr={"sparse": 1e-2}, num_threads=1)
    result = train_all(table, config=config, stages=("sparse",), validate_epochs=False)
    report = result.metrics[label_set.name]
    assert report["n"] >= 20   # whole held-out images, not a handful of nuclei
    assert_report_is_its_confusion(report)
    assert report["accuracy"] >= 0.9 and report["macro_f1"] >= 0.9, report["confusion"]
