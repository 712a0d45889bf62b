import pytest
import torch

from mlcore.backbones import create_model, list_backbones, register_backbone
from mlcore.model import CrossTrainedModel
from mlcore.types import LabelSet


def test_registry_lists_the_backbones():
    assert {"small", "resnet18", "resnet50"} <= set(list_backbones())


@pytest.mark.parametrize("name, kwargs", [("small", {}), ("resnet18", {}), ("resnet50", {}),
                                          ("resnet18", {"small_input": True})])
def test_output_shapes_on_a_tiny_batch(name, kwargs):
    model = create_model(name, num_outputs=7, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_resnet_parameter_counts_match_the_paper_architectures():
    # torchvision's resnet18/50 with a 1000-class head have 11.69M / 25.56M parameters.
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(create_model("resnet18", 1000)) == 11_689_512
    assert count(create_model("resnet50", 1000)) == 25_557_032


def test_unknown_name_and_duplicate_registration_are_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        create_model("vgg", 3)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("small")(lambda num_outputs: None)


def test_merged_model_uses_the_factory_and_blocks_partition_the_outputs():
    sets = [LabelSet("a", ("x", "y")), LabelSet("b", ("p", "q", "r"))]
    model = CrossTrainedModel(sets, "resnet18", {"small_input": True, "width": 8}).eval()
    assert model.blocks == ((0, 2), (2, 5)) and model.num_outputs == 5
    with torch.no_grad():
        logits, heads = model(torch.randn(3, 3, 64, 64))
    assert logits.shape == (3, 5) and [h.shape for h in heads] == [(3, 2), (3, 3)]
    single = CrossTrainedModel(sets[:1], "small", {"width": 4})
    assert not single.has_correlation_heads
