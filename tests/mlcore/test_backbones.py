import json
import socket

import numpy as np
import pytest
import safetensors.torch
import torch

from mlcore import backbones
from mlcore.backbones import (backbone_choices, create_model, import_timm, list_backbones, register_backbone,
                              resolve_backbone)
from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.cli import main as cli_main
from mlcore.config import ConfigError, TrainConfig, load_config_file
from mlcore.model import CrossTrainedModel
from mlcore.predict import predict
from mlcore.synthetic import generate_dataset
from mlcore.train import train_all
from mlcore.types import LabelSet
from tests.mlcore import legacy_resnet
from tests.mlcore.helpers import two_set_table

SETS = [LabelSet("a", ("x", "y")), LabelSet("b", ("p", "q", "r"))]


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails the test: weights come from local files only."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_registry_lists_the_backbones_and_the_choices_add_auto():
    assert list_backbones() == ["resnet18", "resnet50", "small"]
    assert backbone_choices() == ["auto", "resnet18", "resnet50", "small"]


@pytest.mark.parametrize("in_channels", [3, 4])
@pytest.mark.parametrize("name, kwargs", [("small", {}), ("resnet18", {}), ("resnet50", {"width": 16}),
                                          ("resnet18", {"small_input": True}), ("timm/convnext_atto", {}),
                                          ("timm/efficientnet_b0", {"dropout": 0.2})])
def test_output_shapes_on_64_px_crops(name, kwargs, in_channels):
    model = create_model(name, num_outputs=7, in_channels=in_channels, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 64, 64))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_every_registered_backbone_takes_a_mask_channel():
    for name in list_backbones():
        model = create_model(name, num_outputs=3, in_channels=4, width=8).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 4, 64, 64)).shape == (1, 3), name


def test_resnet_parameter_counts_match_the_paper_architectures():
    # torchvision's resnet18/50 with a 1000-class head have 11.69M / 25.56M parameters.
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(create_model("resnet18", 1000)) == 11_689_512
    assert count(create_model("resnet50", 1000)) == 25_557_032


def test_small_input_stem_is_a_3x3_stride_1_conv_without_max_pool():
    model = create_model("resnet18", 5, small_input=True, width=8, in_channels=4)
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.in_channels) == ((3, 3), (1, 1), 4)
    assert isinstance(model.maxpool, torch.nn.Identity)
    features = model.forward_features(torch.randn(1, 4, 64, 64))
    assert features.shape == (1, 64, 8, 8)  # layer4 keeps 8 x 8 cells of a 64 px crop


def test_timm_names_are_built_by_timm_with_our_head_and_channels():
    timm = import_timm()
    model = create_model("timm/convnext_atto", 6, in_channels=4)
    reference = timm.create_model("convnext_atto", pretrained=False, num_classes=6, in_chans=4)
    assert type(model) is type(reference)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}


def test_merged_model_uses_the_factory_and_blocks_partition_the_outputs():
    model = CrossTrainedModel(SETS, "resnet18", {"small_input": True, "width": 8}).eval()
    assert model.blocks == ((0, 2), (2, 5)) and model.num_outputs == 5
    with torch.no_grad():
        logits, heads = model(torch.randn(3, 3, 64, 64))
    assert logits.shape == (3, 5) and [h.shape for h in heads] == [(3, 2), (3, 3)]
    single = CrossTrainedModel(SETS[:1], "small", {"width": 4})
    assert not single.has_correlation_heads


def test_unknown_names_are_rejected_by_the_factory_and_the_config():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        create_model("vgg", 3)
    with pytest.raises(ValueError, match="timm has no model 'not_a_model'"):
        create_model("timm/not_a_model", 3)
    with pytest.raises(ValueError, match="resolve_backbone"):
        create_model("auto", 3)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("small")(lambda num_outputs: None)
    for name in ("vgg", "timm/not_a_model", "timm/"):
        with pytest.raises(ConfigError, match="model.backbone"):
            TrainConfig.from_dict({"model": {"backbone": name}})
    config = TrainConfig.from_dict({"model": {"backbone": "timm/efficientnet_b0", "drop_rate": 0.1}})
    assert config.backbone == "timm/efficientnet_b0" and config.backbone_kwargs == {"drop_rate": 0.1}
    assert TrainConfig().backbone == "auto"


# --------------------------------------------------------------------------------- auto: CPU and GPU


def test_auto_is_the_small_16_wide_net_on_a_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backbone("auto", {}, "cpu") == ("small", {})
    assert resolve_backbone("auto", None, "auto") == ("small", {})
    assert resolve_backbone("auto", {"in_channels": 4}, torch.device("cpu")) == ("small", {"in_channels": 4})
    name, kwargs = resolve_backbone("auto", {}, "cpu")
    model = create_model(name, 5, **kwargs)
    assert isinstance(model, backbones.SmallCNN) and model.features[0][0].out_channels == 16


def test_auto_is_a_small_input_resnet18_on_a_gpu(monkeypatch):
    assert resolve_backbone("auto", {}, "cuda") == ("resnet18", {"small_input": True})
    assert resolve_backbone("auto", {"in_channels": 4}, torch.device("cuda", 1)) == (
        "resnet18", {"small_input": True, "in_channels": 4})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backbone("auto", {}, None) == ("resnet18", {"small_input": True})
    assert resolve_backbone("auto", {}, "auto") == ("resnet18", {"small_input": True})
    # A named backbone is never replaced.
    assert resolve_backbone("resnet50", {"width": 8}, "cuda") == ("resnet50", {"width": 8})
    assert resolve_backbone("small", {}, "cpu") == ("small", {})


def test_training_records_the_backbone_auto_became(tmp_path):
    table, _ = two_set_table(images_per_set=2)
    config = TrainConfig(backbone_kwargs={"width": 4}, batch_size=32, samples_per_epoch=64,
                         epochs={"sparse": 1, "correlation": 1, "completion": 1}, device="cpu")
    train_all(table, config=config, stages=("sparse",), out_dir=tmp_path)
    raw = load_checkpoint(tmp_path / "model.pt").raw
    assert raw["config"]["backbone"] == "auto"  # the user's choice; the architecture is what was built
    assert raw["architecture"]["backbone"] == "small" and raw["architecture"]["backbone_kwargs"] == {"width": 4}


@pytest.mark.slow  # real training / big networks
def test_the_gpu_choice_trains_saves_and_infers_on_a_cpu(tmp_path, monkeypatch):
    # The CUDA path with a CPU fallback: "auto" builds the GPU's backbone, the whole pipeline runs on the CPU.
    monkeypatch.setitem(backbones.AUTO_CHOICE, "cpu", backbones.AUTO_CHOICE["cuda"])
    table, _ = two_set_table(images_per_set=2)
    # Width 16, not 4: torch 2.13's CPU backward of this net at widths 4 and 8 corrupts the heap now and
    # then (the hand-written ResNet did the same), a crash of the whole test run.
    config = TrainConfig(backbone_kwargs={"width": 16}, batch_size=32, samples_per_epoch=64, device="cpu",
                         epochs={"sparse": 1, "correlation": 1, "completion": 1})
    result = train_all(table, config=config, stages=("sparse",), out_dir=tmp_path)
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert (loaded.raw["architecture"]["backbone"], loaded.raw["architecture"]["backbone_kwargs"]) == (
        "resnet18", {"small_input": True, "width": 16})
    before, after = predict(result.model, table.crops), predict(loaded.model, table.crops)
    for name in ("A", "B"):
        np.testing.assert_allclose(before[name].probs, after[name].probs, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys):
    for index, name in enumerate(("d1", "d2")):
        generate_dataset(tmp_path / name, "seed", n_images=1, nuclei_per_image=8, class_names=["p", "q"], seed=index)
    (tmp_path / "config.json").write_text(json.dumps({
        "datasets": [{"name": name, "format": "seed", "path": name} for name in ("d1", "d2")],
        "model": {"width": 4}, "cache_dir": str(tmp_path / "cache")}))
    code = cli_main(["train", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "run"),
                     "--device", "cuda", "--epochs", "1"])
    assert code == 2
    assert "device cuda requested but CUDA is not available on this machine" in capsys.readouterr().err


# --------------------------------------------------------------------------------- pretrained files


def resnet18_imagenet_like_file(tmp_path, suffix=".pth"):
    """A state dict as a timm ResNet-18 with the ImageNet head and an RGB stem would ship it."""
    state = import_timm().create_model("resnet18", pretrained=False).state_dict()
    state = {k: v * 0.9 + 0.01 * torch.rand_like(v) if v.is_floating_point() else v for k, v in state.items()}  # not an init
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, path)
    else:
        torch.save(state, path)
    return path, state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_loads_every_weight_and_adapts_the_stem_and_head(tmp_path, no_network, suffix):
    path, state = resnet18_imagenet_like_file(tmp_path, suffix)
    model = create_model("resnet18", 7, in_channels=4, pretrained_file=str(path))
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith(("conv1.", "fc.")):
            assert torch.equal(loaded[key], value), key
    # timm's adapt_input_conv: the RGB filters repeated over 4 channels, scaled by 3/4.
    expected = torch.cat([state["conv1.weight"], state["conv1.weight"][:, :1]], dim=1) * 3 / 4
    torch.testing.assert_close(loaded["conv1.weight"], expected)
    assert loaded["fc.weight"].shape == (7, 512)  # a 1000-class head does not fit 7 outputs: left random
    assert not torch.equal(loaded["fc.weight"], state["fc.weight"][:7])


def test_pretrained_file_of_our_own_size_loads_the_head_too(tmp_path, no_network):
    source = create_model("resnet18", 7, in_channels=4, width=8)
    torch.save(source.state_dict(), tmp_path / "own.pth")
    model = create_model("resnet18", 7, in_channels=4, width=8, pretrained_file=tmp_path / "own.pth")
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_stem_that_fits_is_the_files_own_whatever_timm_makes_of_it(tmp_path, no_network, monkeypatch):
    # timm before our pin (1.0.29, on a GPU machine's image) took a 4-channel stem for a 3-channel one, failed to
    # adapt it and left it random with only a log warning.
    timm_models = import_timm().models
    real_load_pretrained = timm_models.load_pretrained

    def load_pretrained_as_older_timm(model, **kwargs):
        real_load_pretrained(model, **kwargs)
        torch.nn.init.normal_(model.conv1.weight)

    monkeypatch.setattr(timm_models, "load_pretrained", load_pretrained_as_older_timm)
    source = create_model("resnet18", 7, in_channels=4, width=8)
    torch.save(source.state_dict(), tmp_path / "own.pth")
    model = create_model("resnet18", 7, in_channels=4, width=8, pretrained_file=tmp_path / "own.pth")
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_small_input_keeps_the_pretrained_body_and_starts_a_fresh_stem(tmp_path, no_network):
    path, state = resnet18_imagenet_like_file(tmp_path)
    model = create_model("resnet18", 7, small_input=True, pretrained_file=path)
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(model.state_dict()["bn1.running_var"], state["bn1.running_var"])


def test_pretrained_file_for_a_timm_name(tmp_path, no_network):
    timm = import_timm()
    state = timm.create_model("convnext_atto", pretrained=False).state_dict()
    torch.save(state, tmp_path / "convnext.pth")
    model = create_model("timm/convnext_atto", 5, in_channels=4, pretrained_file=tmp_path / "convnext.pth")
    assert torch.equal(model.state_dict()["stages.3.blocks.1.conv_dw.weight"], state["stages.3.blocks.1.conv_dw.weight"])
    assert model.stem[0].weight.shape[1] == 4 and model.head.fc.weight.shape[0] == 5


def test_pretrained_file_errors_name_the_option_and_the_file(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="pretrained_file: .*missing.pth not found"):
        create_model("resnet18", 3, pretrained_file=tmp_path / "missing.pth")
    torch.save(import_timm().create_model("resnet50", pretrained=False).state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(ValueError, match="pretrained_file: .*resnet50.pth does not fit resnet18"):
        create_model("resnet18", 3, pretrained_file=tmp_path / "resnet50.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="junk.pth is not a readable state dict"):
        create_model("resnet18", 3, pretrained_file=tmp_path / "junk.pth")


def test_config_file_resolves_pretrained_file_beside_it(tmp_path):
    (tmp_path / "data").mkdir()
    config = {"datasets": [{"name": "a", "format": "seed", "path": "data"}],
              "model": {"backbone": "resnet18", "pretrained_file": "weights/r18.pth"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="model.pretrained_file: 'weights/r18.pth' is not a file"):
        load_config_file(tmp_path / "config.json")
    (tmp_path / "weights").mkdir()
    torch.save({}, tmp_path / "weights" / "r18.pth")
    _, loaded, _ = load_config_file(tmp_path / "config.json")
    assert loaded.backbone_kwargs["pretrained_file"] == str(tmp_path / "weights" / "r18.pth")


def test_a_checkpoint_does_not_need_the_pretrained_file_again(tmp_path, no_network):
    path, _ = resnet18_imagenet_like_file(tmp_path)
    model = CrossTrainedModel(SETS, "resnet18", {"small_input": True, "pretrained_file": str(path)}).eval()
    save_checkpoint(tmp_path / "model.pt", model, "sparse", 0, True, TrainConfig())
    path.unlink()
    loaded = load_checkpoint(tmp_path / "model.pt")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images)[0], model(images)[0])


# --------------------------------------------------------------------------------- old checkpoints


@pytest.mark.slow  # real training / big networks
@pytest.mark.parametrize("name, kwargs", [("resnet18", {}), ("resnet18", {"small_input": True, "width": 16}),
                                          ("resnet50", {"width": 8})])
def test_checkpoints_of_the_hand_written_resnets_load_with_the_same_outputs(tmp_path, name, kwargs):
    torch.manual_seed(0)
    old = getattr(legacy_resnet, name)(5, **kwargs)
    for tensor in old.state_dict().values():  # trained-looking weights and BN statistics, not an init
        if tensor.is_floating_point():
            tensor.copy_(torch.rand_like(tensor) * 0.2 + 0.9 if tensor.ndim == 1 else torch.randn_like(tensor) * 0.05)
    old.eval()
    model = CrossTrainedModel(SETS, name, kwargs)
    save_checkpoint(tmp_path / "new.pt", model, "sparse", 0, True, TrainConfig(backbone=name, backbone_kwargs=kwargs))
    raw = torch.load(tmp_path / "new.pt", weights_only=True)
    # The checkpoint as the hand-written class wrote it: its backbone keys (stem.0, stem.1, ...).
    raw["model_state"] = {**{k: v for k, v in raw["model_state"].items() if not k.startswith("backbone.")},
                          **{f"backbone.{k}": v for k, v in old.state_dict().items()}}
    assert "backbone.stem.0.weight" in raw["model_state"] and "backbone.layer2.0.downsample.0.weight" in raw["model_state"]
    torch.save(raw, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.backbone(images), old(images), rtol=1e-5, atol=1e-5)
