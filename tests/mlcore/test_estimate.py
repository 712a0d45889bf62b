"""The default schedule's rule, the time estimate, the speed probe, and what train_all records for both."""

import math

import numpy as np
import pytest

from mlcore.checkpoint import load_checkpoint
from mlcore.config import TrainConfig
from mlcore.estimate import (DRAW_BUDGET, MAX_EPOCHS, MIN_EPOCHS, SAMPLES_PER_EPOCH_CAP, default_schedule,
                             estimate_seconds, measure_speed, speed_from_history)
from mlcore.train import train_all
from tests.mlcore.helpers import two_set_table

TINY = dict(backbone_kwargs={"width": 4}, batch_size=32, samples_per_epoch=None,
            epochs={"sparse": 2, "correlation": 2, "completion": 1}, correlation_views=1)


@pytest.mark.parametrize("nuclei, draws, epochs", [
    (40, 128, MAX_EPOCHS),          # fewer nuclei than a batch: one batch an epoch
    (600, 600, MAX_EPOCHS),         # a small project: 10 epochs of one draw per nucleus
    (10_000, 10_000, 10),           # the budget is just met
    (20_000, 20_000, 5),            # the budget binds: 5 x 20,000 x 2 stages = 200,000
    (32_768, 32_768, 3),
    (500_000, SAMPLES_PER_EPOCH_CAP, 3),  # epochs are capped at the CLI's fixed size
])
def test_default_schedule_scales_draws_and_epochs_to_the_data(nuclei, draws, epochs):
    assert default_schedule(nuclei) == {"samples_per_epoch": draws, "epochs": epochs}


def test_default_schedule_bounds_the_draws_of_the_two_backbone_stages():
    for nuclei in (1, 100, 999, 5_000, 12_345, 33_000, 10**7):
        schedule = default_schedule(nuclei)
        assert MIN_EPOCHS <= schedule["epochs"] <= MAX_EPOCHS
        assert 2 * schedule["epochs"] * schedule["samples_per_epoch"] <= max(DRAW_BUDGET, 2 * MIN_EPOCHS * 128)


def test_a_600_nucleus_default_takes_minutes_at_a_busy_two_core_speed():
    # 100 crops/s training, 600 inference: what the busy 2-core machine managed.
    schedule = default_schedule(600)
    estimate = estimate_seconds(nuclei=600, labelled=600, stages=("sparse", "correlation", "completion"),
                                epochs={s: schedule["epochs"] for s in ("sparse", "correlation", "completion")},
                                samples_per_epoch=schedule["samples_per_epoch"], train_samples_per_s=100,
                                infer_samples_per_s=600)
    assert 60 < estimate["total"] < 5 * 60
    # The CLI's defaults (32,768 draws an epoch, 12 + 10 epochs) would take over two hours at that speed.
    cli = TrainConfig()
    slow = estimate_seconds(nuclei=600, labelled=600, stages=("sparse", "correlation", "completion"),
                            epochs=cli.epochs, samples_per_epoch=cli.samples_per_epoch, train_samples_per_s=100,
                            infer_samples_per_s=600)
    assert slow["total"] > 2 * 3600


def test_estimate_counts_each_stage_as_train_all_spends_it():
    estimate = estimate_seconds(nuclei=1000, labelled=500, stages=("sparse", "correlation", "completion"),
                                epochs={"sparse": 2, "correlation": 4, "completion": 3}, samples_per_epoch=None,
                                train_samples_per_s=100, infer_samples_per_s=1000, val_fraction=0.2,
                                correlation_views=2)
    validation = 100 / 1000  # 20% of the 500 labelled nuclei, inferred
    assert estimate["per_stage"]["sparse"] == pytest.approx(2 * (400 / 100 + validation) + validation)
    assert estimate["per_stage"]["correlation"] == pytest.approx(2 * 400 / 1000 + validation)
    assert estimate["per_stage"]["completion"] == pytest.approx(3 * (800 / 100 + validation) + validation)
    assert estimate["total"] == pytest.approx(sum(estimate["per_stage"].values()))
    only_sparse = estimate_seconds(nuclei=1000, labelled=500, stages=("sparse",), epochs={"sparse": 2},
                                   samples_per_epoch=640, train_samples_per_s=100, infer_samples_per_s=1000)
    assert set(only_sparse["per_stage"]) == {"sparse"}
    assert only_sparse["total"] == pytest.approx(2 * (6.4 + validation) + validation)
    with pytest.raises(ValueError):
        estimate_seconds(nuclei=1, labelled=1, stages=("sparse",), epochs={"sparse": 1}, samples_per_epoch=None,
                         train_samples_per_s=0, infer_samples_per_s=1)


def test_measure_speed_times_real_steps():
    speed = measure_speed("small", {"width": 4}, batch_size=8, batches=1)
    assert speed["train_samples_per_s"] > 0 and speed["infer_samples_per_s"] > 0
    assert all(math.isfinite(v) for v in speed.values())


@pytest.mark.slow  # real training: all three stages
def test_train_all_records_each_epochs_validation_and_speed(tmp_path):
    table, _ = two_set_table(images_per_set=3)
    finished = []
    result = train_all(table, config=TrainConfig(**TINY), out_dir=tmp_path,
                       stage_done=lambda stage, path, metrics: finished.append((stage, path.name, sorted(metrics))))
    assert finished == [("sparse", "stage1.pt", ["A", "B"]), ("correlation", "stage2.pt", ["A", "B"]),
                        ("completion", "stage3.pt", ["A", "B"])]
    assert [h["stage"] for h in result.history] == ["sparse", "sparse", "correlation", "correlation", "completion"]
    for entry in result.history:
        assert set(entry["val_macro_f1"]) == {"A", "B"}
        assert entry["val_rows"] > 0 and entry["val_seconds"] > 0
    # Each stage's last epoch is validated with the stage's final weights: its figure is the stage's own
    # evaluation on the same rows (the tiny set has fewer than EPOCH_VALIDATION_ROWS, so all of them).
    for stage, file in (("sparse", "stage1.pt"), ("completion", "stage3.pt")):
        last = [h for h in result.history if h["stage"] == stage][-1]
        final = load_checkpoint(tmp_path / file).metrics
        assert last["val_macro_f1"] == pytest.approx({name: final[name]["macro_f1"] for name in ("A", "B")})
    # Stage 2 trains only the MLPs: its per-epoch validation runs them on the frozen logits, and the
    # last epoch's figure is the stage's own evaluation on the same rows.
    stage2 = [h for h in result.history if h["stage"] == "correlation"]
    final = load_checkpoint(tmp_path / "stage2.pt").metrics
    assert stage2[-1]["val_macro_f1"] == pytest.approx({name: final[name]["macro_f1"] for name in ("A", "B")})
    speed = speed_from_history(result.history)
    assert speed["train_samples_per_s"] > 0 and speed["infer_samples_per_s"] > 0
    assert speed_from_history([]) is None


@pytest.mark.slow  # real training: all three stages
def test_a_run_resumed_from_a_stage_checkpoint_keeps_the_earlier_history(tmp_path):
    table, _ = two_set_table(images_per_set=3)
    config = TrainConfig(**TINY)
    first = train_all(table, config=config, stages=("sparse",), out_dir=tmp_path / "one")
    stage1 = load_checkpoint(tmp_path / "one" / "stage1.pt")
    assert stage1.raw["extra"]["history"] == first.history
    resumed = train_all(table, config=config, stages=("correlation", "completion"), init_checkpoint=stage1,
                        history=stage1.raw["extra"]["history"], out_dir=tmp_path / "two",
                        val_rows=np.array(stage1.raw["extra"]["val_rows"]),
                        train_rows=np.setdiff1d(np.arange(len(table)), stage1.raw["extra"]["val_rows"]))
    assert [h["stage"] for h in resumed.history] == ["sparse", "sparse", "correlation", "correlation", "completion"]
    assert load_checkpoint(tmp_path / "two" / "model.pt").raw["extra"]["history"] == resumed.history


def test_the_recorded_inference_speed_is_the_backbone_stages_not_stage_two_heads():
    """Stage 2's validation runs small heads on logits computed once: 180,000 rows/s against 6,000 for the backbone.
    Averaged in, an estimate's forward passes came out 11 times too fast."""
    history = [{"stage": "sparse", "samples": 6000, "seconds": 10.0, "val_rows": 6000, "val_seconds": 1.0},
               {"stage": "correlation", "samples": 9000, "seconds": 1.0, "val_rows": 180000, "val_seconds": 1.0},
               {"stage": "completion", "samples": 6000, "seconds": 10.0, "val_rows": 6000, "val_seconds": 1.0}]
    assert speed_from_history(history) == {"train_samples_per_s": 600.0, "infer_samples_per_s": 6000.0}
