"""SeedEnsemble: models of one setting trained with different seeds, their logits averaged (mlcore.model), trained
by mlcore.train.train_ensemble and ``python -m mlcore train --ensemble N``, saved and loaded as one checkpoint."""

import json

import pytest
import torch

from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.config import TrainConfig
from mlcore.model import CrossTrainedModel, SeedEnsemble
from mlcore.predict import forward_logits, predict
from mlcore.train import evaluate, train_all
from mlcore.types import LabelSet
from tests.mlcore.helpers import random_model, two_set_table

TINY = {"backbone": "small", "backbone_kwargs": {"width": 4}, "batch_size": 32, "samples_per_epoch": 64,
        "correlation_views": 1, "epochs": {"sparse": 1, "correlation": 1, "completion": 1}, "device": "cpu"}


@pytest.mark.parametrize("tta", [False, True])
def test_an_ensembles_logits_are_the_mean_of_its_members(tta):
    table, label_sets = two_set_table(crop_size=64)
    members = [random_model(label_sets, seed=seed).eval() for seed in (0, 1)]
    for member in members:
        member.use_correlation.fill_(True)   # both branches count
    ensemble = SeedEnsemble(members)
    crops = table.crops[:40]
    logits, heads = forward_logits(ensemble, crops, batch_size=16, tta=tta)
    alone = [forward_logits(member, crops, batch_size=16, tta=tta) for member in members]
    assert torch.allclose(logits, (alone[0][0] + alone[1][0]) / 2, atol=1e-6)
    assert len(heads) == 2 and all(torch.allclose(heads[d], (alone[0][1][d] + alone[1][1][d]) / 2, atol=1e-6)
                                   for d in range(2))
    assert not torch.allclose(alone[0][0], alone[1][0])   # the members differ, so the mean says something
    predictions = predict(ensemble, crops, tta=tta)
    assert set(predictions) == {"A", "B"} and predictions["A"].mlp_probs is not None


def test_members_of_another_setting_or_stage_are_refused():
    _, label_sets = two_set_table(crop_size=64)
    first = random_model(label_sets)
    with pytest.raises(ValueError, match="at least two"):
        SeedEnsemble([first])
    other_sets = CrossTrainedModel([LabelSet("A", ("a0", "a1", "a2")), LabelSet("C", ("c0", "c1"))], "small",
                                   {"width": 4})
    with pytest.raises(ValueError, match="model 2 of the ensemble differs"):
        SeedEnsemble([first, other_sets])
    wider = CrossTrainedModel(list(label_sets), "small", {"width": 8})
    with pytest.raises(ValueError, match="model 2 of the ensemble differs"):
        SeedEnsemble([first, wider])
    later = random_model(label_sets, seed=1)
    later.use_correlation.fill_(True)
    with pytest.raises(ValueError, match="ends another stage"):
        SeedEnsemble([first, later])


def test_an_ensemble_checkpoint_loads_as_the_same_ensemble(tmp_path):
    table, label_sets = two_set_table(crop_size=64)
    ensemble = SeedEnsemble([random_model(label_sets, seed=seed) for seed in (0, 1, 2)]).eval()
    path = save_checkpoint(tmp_path / "ensemble.pt", ensemble, "sparse", 0, True, TrainConfig(crop_context_view=0))
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, SeedEnsemble) and len(loaded.model.members) == 3
    assert loaded.model.describe()["members"] == 3
    expected = forward_logits(ensemble, table.crops[:30])[0]
    assert torch.equal(forward_logits(loaded.model, table.crops[:30])[0], expected)
    with pytest.raises(ValueError, match="ensemble of 3 models"):   # it cannot be trained on as one model
        train_all(table, config=TrainConfig.from_dict({**TINY, "crop_context_view": 0}), stages=["sparse"],
                  init_checkpoint=path)


def test_an_ensemble_config_trains_each_seed_stage_by_stage_on_one_split_and_scores_their_average(tmp_path):
    table, _ = two_set_table()
    config = TrainConfig.from_dict({**TINY, "seed": 5, "model": {"ensemble": 2}})
    events, stages_done = [], []
    result = train_all(table, config=config, progress=events.append, out_dir=tmp_path,
                       stage_done=lambda stage, path, metrics: stages_done.append((stage, path, metrics)))

    assert [m["seed"] for m in result.members] == [5, 6]
    saved = load_checkpoint(tmp_path / "model.pt")
    assert isinstance(saved.model, SeedEnsemble) and saved.stage == "completion" and saved.config.ensemble == 2
    assert [m["seed"] for m in saved.raw["extra"]["members"]] == [5, 6]
    members = saved.model.members
    assert not torch.equal(next(members[0].parameters()), next(members[1].parameters()))
    for member, model in zip(result.members, members):   # each member's figures are its own model's
        assert member["metrics"]["A"]["macro_f1"] == pytest.approx(
            evaluate(model, table, result.val_rows)["A"]["macro_f1"], abs=1e-9)
    assert result.metrics == evaluate(saved.model, table, result.val_rows)

    # Every stage ends with the ensemble's checkpoint, as a single model's stages do.
    assert [(stage, path) for stage, path, _ in stages_done] == [
        ("sparse", tmp_path / "stage1.pt"), ("correlation", tmp_path / "stage2.pt"),
        ("completion", tmp_path / "stage3.pt")]
    stage1 = load_checkpoint(tmp_path / "stage1.pt").model
    assert isinstance(stage1, SeedEnsemble) and not bool(stage1.use_correlation)
    assert result.stage_metrics["sparse"] == evaluate(stage1, table, result.val_rows) == stages_done[0][2]
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["seed"] for m in written["members"]] == [5, 6]
    assert written["label_sets"]["A"]["macro_f1"] == pytest.approx(result.metrics["A"]["macro_f1"])
    assert [(e["stage"], e["member"]) for e in result.history] == [
        (stage, member) for stage in ("sparse", "correlation", "completion") for member in (1, 2)]
    begins = [(e["stage"], e["member"], e["members"]) for e in events if e["steps"] == 0 and e["stage"] != "crops"]
    assert begins[:2] == [("sparse", 1, 2), ("sparse", 2, 2)] and begins[-1] == ("completion", 2, 2)


def test_an_ensemble_goes_on_from_its_stage_checkpoint_each_member_from_its_own_model(tmp_path):
    table, _ = two_set_table()
    config = TrainConfig.from_dict({**TINY, "model": {"ensemble": 2}})
    train_all(table, config=config, stages=["sparse"], out_dir=tmp_path)
    stage1 = load_checkpoint(tmp_path / "stage1.pt").model
    result = train_all(table, config=config, stages=["correlation"], init_checkpoint=tmp_path / "stage1.pt")
    # Stage 2 trains the heads only: each member's backbone is its own stage-1 backbone.
    for before, after in zip(stage1.members, result.model.members):
        assert all(torch.equal(a, b) for a, b in zip(before.backbone.state_dict().values(),
                                                     after.backbone.state_dict().values()))
    assert bool(result.model.use_correlation)

    with pytest.raises(ValueError, match="holds 2 model\\(s\\) and the config asks for an ensemble of 3"):
        train_all(table, config=TrainConfig.from_dict({**TINY, "model": {"ensemble": 3}}), stages=["correlation"],
                  init_checkpoint=tmp_path / "stage1.pt")
    single = train_all(table, config=TrainConfig.from_dict(TINY), stages=["sparse"], out_dir=tmp_path / "single")
    assert not isinstance(single.model, SeedEnsemble)
    with pytest.raises(ValueError, match="holds 1 model"):
        train_all(table, config=config, stages=["correlation"], init_checkpoint=tmp_path / "single" / "stage1.pt")


def test_cli_train_ensemble_then_infer_and_evaluate_with_it(tmp_path, capsys):
    from mlcore.cli import main
    from mlcore.synthetic import generate_dataset

    for name, classes in (("one", ["a", "b"]), ("two", ["c", "d", "e"])):
        generate_dataset(tmp_path / name, "seed", n_images=4, nuclei_per_image=25, class_names=classes,
                         seed=len(name), size=(128, 128))
    config = {"datasets": [{"name": "one", "format": "seed", "path": "one"},
                           {"name": "two", "format": "seed", "path": "two"}],
              "model": {"width": 4}, "batch_size": 32, "correlation_views": 1, "cache_dir": str(tmp_path / "cache"),
              "split": {"val_fraction": 0.25}, "sampling": {"samples_per_epoch": 96}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    common = ["--config", str(tmp_path / "config.json"), "--epochs", "1", "--device", "cpu", "--ensemble", "2"]
    out = tmp_path / "run"
    assert main(["train", *common, "--out", str(out), "--stage", "sparse"]) == 0
    assert main(["train", *common, "--out", str(out), "--stage", "correlation"]) == 0   # from the ensemble's stage1.pt
    assert main(["train", *common, "--out", str(out), "--stage", "completion"]) == 0
    said = capsys.readouterr().err
    assert "model 2/2, stage completion: 1 epochs" in said
    assert "validation, the model of seed 1 alone, one view:" in said
    assert "validation, one view, the ensemble of 2 seeds:" in said
    ensemble = load_checkpoint(out / "model.pt")
    assert isinstance(ensemble.model, SeedEnsemble) and ensemble.stage == "completion"
    assert [m["seed"] for m in ensemble.raw["extra"]["members"]] == [0, 1]
    written = json.loads((out / "metrics.json").read_text())
    assert "label_sets_tta" in written and [m["seed"] for m in written["members"]] == [0, 1]

    for wrong in ("0", "9"):
        assert main(["train", *common[:-1], wrong, "--out", str(tmp_path / "z")]) == 2
        assert f"--ensemble {wrong}: give 1 to 8 models" in capsys.readouterr().err

    image = next((tmp_path / "one" / "images").glob("*.png"))
    mask = next((tmp_path / "one" / "masks").glob(f"{image.stem}*"))
    assert main(["infer", "--checkpoint", str(out / "model.pt"), "--image", str(image), "--mask", str(mask),
                 "--out", str(tmp_path / "predicted")]) == 0
    assert any((tmp_path / "predicted").iterdir())
    assert main(["evaluate", "--checkpoint", str(out / "model.pt"), "--dataset", f"one=seed:{tmp_path / 'one'}",
                 "--label-set", "one", "--against", str(out / "stage1.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["against"]["checkpoint"] == str(out / "stage1.pt")
