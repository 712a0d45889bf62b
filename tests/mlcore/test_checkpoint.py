import numpy as np
import pytest
import torch

from mlcore.checkpoint import load_checkpoint
from mlcore.config import TrainConfig
from mlcore.predict import predict
from mlcore.train import train_all
from mlcore.types import Cancelled
from tests.mlcore.helpers import stop_in_second_epoch, two_set_table

TINY = dict(backbone_kwargs={"width": 4}, batch_size=32, samples_per_epoch=None, epochs={"sparse": 2, "correlation": 1, "completion": 1},
            correlation_views=1)


@pytest.mark.slow  # real training
def test_round_trip_on_cpu_gives_the_same_predictions(tmp_path):
    table, label_sets = two_set_table(images_per_set=3)
    result = train_all(table, config=TrainConfig(**TINY), out_dir=tmp_path)
    before = predict(result.model, table.crops)
    loaded = load_checkpoint(tmp_path / "model.pt")
    after = predict(loaded.model, table.crops)
    for name in ("A", "B"):
        np.testing.assert_array_equal(before[name].labels, after[name].labels)
        np.testing.assert_allclose(before[name].probs, after[name].probs, atol=1e-6)
        np.testing.assert_allclose(before[name].mlp_probs, after[name].mlp_probs, atol=1e-6)
    assert loaded.stage == "completion" and loaded.stage_complete
    assert [s.name for s in loaded.label_sets] == ["A", "B"]
    assert loaded.label_sets[0].classes == label_sets[0].classes and loaded.label_sets[0].colors == label_sets[0].colors
    raw = loaded.raw
    assert {"mlcore", "torch", "numpy"} <= set(raw["versions"])
    assert raw["crop"]["size"] == 64 and raw["config"]["backbone"] == "auto"
    assert raw["architecture"]["backbone"] == ("resnet18" if torch.cuda.is_available() else "small")
    assert raw["optimizer_state"] is not None and set(raw["metrics"]) == {"A", "B"}
    assert any(k.startswith("correlation_heads.") for k in raw["model_state"])
    # a checkpoint saved from any device loads on the CPU
    assert all(t.device.type == "cpu" for t in raw["model_state"].values())


@pytest.mark.slow  # real training
def test_resume_an_unfinished_stage_from_last_pt(tmp_path):
    table, _ = two_set_table(images_per_set=3)
    config = TrainConfig(**{**TINY, "epochs": {"sparse": 3, "correlation": 1, "completion": 1}})
    should_stop = stop_in_second_epoch(table, config, tmp_path / "probe")
    with pytest.raises(Cancelled):
        train_all(table, config=config, stages=("sparse",), should_stop=should_stop, out_dir=tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last.stage == "sparse" and last.epoch == 0 and not last.stage_complete
    assert last.optimizer_state is not None and last.optimizer_state["state"]
    resumed = train_all(table, config=config, stages=("sparse",), init_checkpoint=tmp_path / "run" / "last.pt",
                        out_dir=tmp_path / "run")
    assert [h["epoch"] for h in resumed.history] == [2, 3]   # epochs 2 and 3 only
    assert load_checkpoint(tmp_path / "run" / "model.pt").stage_complete


@pytest.mark.slow  # real training
def test_next_stage_starts_from_a_finished_stage_checkpoint(tmp_path):
    table, _ = two_set_table(images_per_set=3)
    config = TrainConfig(**TINY)
    train_all(table, config=config, stages=("sparse",), out_dir=tmp_path)
    stage1 = load_checkpoint(tmp_path / "stage1.pt")
    result = train_all(table, config=config, stages=("correlation",), init_checkpoint=tmp_path / "stage1.pt",
                       out_dir=tmp_path)
    # stage 2 freezes the backbone: its weights are stage 1's
    for key, value in stage1.model.backbone.state_dict().items():
        assert torch.equal(value, result.model.backbone.state_dict()[key].cpu()), key
    assert load_checkpoint(tmp_path / "model.pt").stage == "correlation"


@pytest.mark.slow  # real training
def test_stage_one_on_a_three_stage_network_leaves_its_stale_heads_out(tmp_path):
    """A fine-tune of stage 1 alone moves the backbone under heads fit to the old one: they were averaged into
    every prediction (89 of 1,089 classes changed in a web training). The base branch alone decides until
    stage 2 fits them again."""
    table, _ = two_set_table(images_per_set=3)
    config = TrainConfig(**TINY)
    train_all(table, config=config, out_dir=tmp_path / "three")
    three = load_checkpoint(tmp_path / "three" / "model.pt")
    assert bool(three.model.use_correlation)
    fine_tuned = train_all(table, config=config, stages=("sparse",), init_checkpoint=tmp_path / "three" / "model.pt",
                           out_dir=tmp_path / "one")
    assert not bool(fine_tuned.model.use_correlation)
    predictions = predict(fine_tuned.model, table.crops)
    assert all(p.mlp_probs is None or np.array_equal(p.probs, p.base_probs) for p in predictions.values())
    again = train_all(table, config=config, stages=("correlation",), init_checkpoint=tmp_path / "one" / "model.pt",
                      out_dir=tmp_path / "two")
    assert bool(again.model.use_correlation)
