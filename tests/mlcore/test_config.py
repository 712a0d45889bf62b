import json

import pytest

from mlcore.config import ConfigError, TrainConfig, load_config_file


def write(tmp_path, payload):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(payload))
    return path


def test_nested_sections_and_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    path = write(tmp_path, {
        "datasets": [{"name": "a", "format": "seed", "path": "data", "labelled": False}],
        "model": {"backbone": "resnet18", "small_input": True}, "crop": {"size": 48},
        "epochs": {"sparse": 3}, "lr": 0.01, "split": {"val_fraction": 0.3, "seed": 4},
        "sampling": {"dataset_power": 0.5, "class_power": 1, "samples_per_epoch": 1000}, "threshold": 0.95})
    specs, config, _ = load_config_file(path)
    assert specs[0].path == tmp_path / "data" and specs[0].labelled is False
    assert config.backbone == "resnet18" and config.backbone_kwargs == {"small_input": True}
    assert config.crop_size == 48 and config.epochs == {"sparse": 3, "correlation": 8, "completion": 10}
    assert config.lr["sparse"] == 0.01 and config.lr["completion"] == 1e-4
    assert (config.val_fraction, config.split_seed, config.samples_per_epoch) == (0.3, 4, 1000)
    assert TrainConfig.from_dict(config.to_dict()) == config   # checkpoints store the flat form


@pytest.mark.parametrize("change, field", [
    ({"datasets": []}, "datasets"),
    ({"datasets": [{"name": "a", "format": "seed"}]}, "datasets[0].path"),
    ({"datasets": [{"name": "a", "format": "seed", "path": "missing"}]}, "datasets[0].path"),
    ({"datasets": [{"name": "a", "format": "seed", "path": ".", "colour": 1}]}, "datasets[0]"),
    ({"threshold": 1.5}, "threshold"),
    ({"model": {"backbone": "vgg"}}, "model.backbone"),
    ({"epochs": {"stage4": 1}}, "epochs.stage4"),
    ({"split": {"val_fraction": 1.0}}, "split.val_fraction"),
    ({"sampling": {"class_power": 2}}, "sampling.class_power"),
    ({"sampling": {"completion_class_power": 1.5}}, "sampling.completion_class_power"),
    ({"sampling": {"completion_class_power": "equal"}}, "sampling.completion_class_power"),
    ({"batch_sise": 3}, "batch_sise"),
])
def test_errors_name_the_field(tmp_path, change, field):
    payload = {"datasets": [{"name": "a", "format": "seed", "path": "."}], **change}
    with pytest.raises(ConfigError) as error:
        load_config_file(write(tmp_path, payload))
    assert field in str(error.value)
