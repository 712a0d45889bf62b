"""Mistakes in a CONFIG.json that `train` took without a word or answered without naming the file (an ML engineer's
exploration found them): "epochs": 0 (or -1) as one number trained nothing and wrote the random weights as
model.pt, and a mistake in "datasets" was the only config error that did not name the config file."""

import json

import pytest

from mlcore import cli


def write_config(tmp_path, **fields):
    (tmp_path / "data").mkdir(exist_ok=True)
    config = {"datasets": [{"name": "one", "format": "seed", "path": "data"}], **fields}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("epochs", [0, -1, -2.0])
def test_epochs_below_one_are_refused_before_any_work(tmp_path, capsys, epochs):
    config = write_config(tmp_path, epochs=epochs)
    code = cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 2
    assert capsys.readouterr().err == f"error: {config}: config field epochs: invalid value {epochs!r}\n"
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("datasets, said", [
    ([{"name": "one", "format": "hovernett", "path": "data"}],
     "config field datasets[0].format: 'hovernett' is not one of seed, hovernet, coco, geojson, pannuke"),
    ([], "config field 'datasets' must be a non-empty list"),
    ([{"name": "one", "format": "seed"}], "config field datasets[0].path is missing or not a string"),
])
def test_a_mistake_in_datasets_names_the_config_file(tmp_path, capsys, datasets, said):
    config = write_config(tmp_path)
    config.write_text(json.dumps({"datasets": datasets}))
    code = cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 2
    assert capsys.readouterr().err == f"error: {config}: {said}\n"
