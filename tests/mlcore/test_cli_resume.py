"""``python -m mlcore train --resume``: an interrupted training goes on from its last finished epoch or stage and
ends with the model the uninterrupted training makes (in-process: the same main() as the subprocess)."""

import json

import pytest
import torch

from mlcore import cli
from mlcore.checkpoint import load_checkpoint
from tests.mlcore.helpers import config_of_generated_datasets


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("resume")
    config_of_generated_datasets(work, {"one": ["a", "b"], "two": ["c", "d", "e"]}, batch_size=32, correlation_views=2,
                                 cache_dir=str(work / "cache"), split={"val_fraction": 0.25},
                                 sampling={"samples_per_epoch": 96}, num_threads=1)
    common = ["train", "--config", str(work / "config.json"), "--epochs", "2", "--device", "cpu", "--no-tta"]
    assert cli.main([*common, "--out", str(work / "straight")]) == 0
    return work, common


def epochs_of(out):
    return [(h["stage"], h["epoch"], h["loss"]) for h in json.loads((out / "metrics.json").read_text())["history"]]


@pytest.mark.parametrize("stage, epoch", [("completion", 2), ("correlation", 1)],
                         ids=["within a stage", "as a stage began"])
def test_an_interrupted_training_resumed_ends_with_the_uninterrupted_model(setup, tmp_path, monkeypatch, capsys,
                                                                         stage, epoch):
    work, common = setup
    out = tmp_path / "run"
    calls = cli.TqdmProgress.__call__

    def interrupt(self, event):
        if event["stage"] == stage and event["epoch"] == epoch and event["step"] > 0:
            raise KeyboardInterrupt
        calls(self, event)

    with monkeypatch.context() as patched:
        patched.setattr(cli.TqdmProgress, "__call__", interrupt)
        assert cli.main([*common, "--out", str(out)]) == 130
    assert "the same command with --resume goes on" in capsys.readouterr().err
    assert not (out / "model.pt").exists()

    assert cli.main([*common, "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().err
    assert ("resuming from last.pt: stage completion to go" if stage == "completion"
            else "resuming from stage1.pt: stages correlation, completion to go") in said
    straight, resumed = (load_checkpoint(path / "model.pt").model.state_dict() for path in (work / "straight", out))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    assert epochs_of(out) == epochs_of(work / "straight")   # the whole history, the same losses

    assert cli.main([*common, "--out", str(out), "--resume"]) == 2
    assert "finished (stage3.pt is its last stage's); nothing to resume" in capsys.readouterr().err


def test_resume_refuses_other_settings_and_an_empty_folder(setup, tmp_path, capsys):
    work, common = setup
    assert cli.main([*common, "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no checkpoint of this training" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()   # a mistyped --out is not made
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "stage1.pt").write_bytes((work / "straight" / "stage1.pt").read_bytes())
    assert cli.main([*common, "--out", str(tmp_path / "half"), "--resume", "--seed", "5"]) == 2
    assert "stage1.pt was trained with other settings (split_seed 0, now 5; seed 0, now 5)" in capsys.readouterr().err
    assert cli.main([*common, "--out", str(tmp_path / "half"), "--resume", "--stage", "completion"]) == 2
    assert "leave --stage out" in capsys.readouterr().err
    fewer = json.loads((work / "config.json").read_text())
    fewer["datasets"][0]["max_images"] = 3
    (work / "fewer.json").write_text(json.dumps(fewer))
    assert cli.main([*common, "--out", str(tmp_path / "half"), "--resume", "--config", str(work / "fewer.json")]) == 2
    assert "the datasets differ from those the interrupted training read" in capsys.readouterr().err
