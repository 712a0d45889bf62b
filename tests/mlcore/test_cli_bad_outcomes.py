"""What the CLI does with a training that diverges, a damaged checkpoint, outputs it cannot write and config values
that are no numbers it can use: a one-line error naming the file or field, exit 2, and no model that classifies
every nucleus alike written or loaded (an ML engineer's exploration found each of these)."""

import json

import pytest
import torch

from mlcore import cli
from mlcore.checkpoint import load_checkpoint
from mlcore.config import ConfigError, TrainConfig
from tests.mlcore.helpers import config_of_generated_datasets


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("outcomes")
    config_of_generated_datasets(work, {"one": ["a", "b"]}, batch_size=32, cache_dir=str(work / "cache"),
                                 split={"val_fraction": 0.25}, sampling={"samples_per_epoch": 64}, num_threads=1)
    return work


def train(work, out, *extra):
    return cli.main(["train", "--config", str(work / "config.json"), "--epochs", "1", "--device", "cpu", "--no-tta",
                     "--baseline", "sparse", "--out", str(out), *extra])


def test_a_diverging_training_stops_with_the_reason_and_writes_no_model(work, tmp_path, capsys):
    config = json.loads((work / "config.json").read_text())
    config["lr"] = 1e30          # Adam steps by about lr whatever the gradient: the weights leave the floats
    config["grad_clip"] = 1e30
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    code = cli.main(["train", "--config", str(tmp_path / "config.json"), "--epochs", "1", "--device", "cpu",
                     "--no-tta", "--baseline", "sparse", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "error: the training diverged: the loss became nan in stage sparse" in err, err[-2000:]
    assert "lower the learning rate" in err and "Traceback" not in err
    assert not (out / "model.pt").exists()


def test_a_checkpoint_with_non_finite_weights_is_refused(work, tmp_path, capsys):
    assert train(work, tmp_path / "good") == 0
    state = torch.load(tmp_path / "good" / "model.pt", weights_only=True)
    name = next(k for k, v in state["model_state"].items() if v.is_floating_point() and v.numel() > 1)
    state["model_state"][name][0] = float("nan")   # one weight gone bad: it turned every class into class 0
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt: the checkpoint's weights are not finite numbers \(1 tensors, "):
        load_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(ValueError, match=r"notes\.json: not a readable mlcore checkpoint") as refused:
        load_checkpoint(tmp_path / "notes.json")
    assert "weights_only" not in str(refused.value)   # no advice to load it unsafely


def test_outputs_that_cannot_be_written_are_refused_before_the_work(work, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert train(work, a_file) == 2
    assert f"error: --out {a_file}: is a file, not a folder" in capsys.readouterr().err
    folder = tmp_path / "folder"
    folder.mkdir()
    code = cli.main(["infer-slide", "--checkpoint", str(tmp_path / "missing.pt"), "--slide", str(tmp_path / "s.tif"),
                     "--nuclei", str(tmp_path / "n.geojson"), "--out", str(folder)])
    assert code == 2   # refused before the checkpoint is even read, let alone the slide classified
    assert f"error: --out {folder}: is a folder; name the file to write" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, says", [
    ("epochs", 1.7, "config field epochs: invalid value 1.7 (a whole number)"),
    ("num_threads", -1, "config field num_threads: invalid value -1"),
    ("num_threads", "two", "config field num_threads: invalid value 'two'"),
    ("model", {"backbone": "small", "width": -3}, "config field model.width: invalid value -3"),
    ("crop", {"size": 100000}, "config field crop.size: invalid value 100000"),
])
def test_config_values_that_are_no_usable_number_name_their_field(field, value, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict({field: value}).validate()


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(work, tmp_path, monkeypatch, capsys):
    def interrupt(self, event):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.TqdmProgress, "__call__", interrupt)
    assert train(work, tmp_path / "run") == 130
    assert "interrupted before the first epoch ended: nothing to resume from" in capsys.readouterr().err
