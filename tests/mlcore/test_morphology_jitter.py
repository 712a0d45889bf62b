"""Morphology jitter (mlcore.data.morphology_jitter, ``augment.scale`` / ``augment.blur``): crops zoomed about their
nucleus and blurred, as scanners differ in resolution and focus; off by default, and then the draws are as before."""

import numpy as np
import pytest
import torch

from mlcore.config import ConfigError, TrainConfig
from mlcore.data import augment, morphology_jitter


def disk(radius: float, size: int = 64, channels: int = 3) -> torch.Tensor:
    """(1, C, S, S): a centred disk of value 1 on -1."""
    centre = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - centre) ** 2 + (xx - centre) ** 2 <= radius ** 2
    image = np.where(inside, 1.0, -1.0).astype(np.float32)
    return torch.from_numpy(np.repeat(image[None, None], channels, axis=1))


def area(x: torch.Tensor) -> float:
    return float((x[0, 0] > 0).sum())


def test_a_zoom_above_one_makes_the_nucleus_larger_and_below_one_smaller():
    image = disk(10).repeat(3, 1, 1, 1)
    zoomed = morphology_jitter(image, torch.tensor([1.0, 1.2, 0.8]), torch.zeros(3))
    base = area(zoomed[0:1])
    assert base == area(disk(10))                                        # zoom 1: untouched
    assert torch.allclose(zoomed[0], image[0], atol=1e-5)
    assert area(zoomed[1:2]) / base == pytest.approx(1.2 ** 2, rel=0.06)
    assert area(zoomed[2:3]) / base == pytest.approx(0.8 ** 2, rel=0.06)
    assert zoomed.is_contiguous(memory_format=torch.channels_last)


def test_blur_softens_the_edge_per_sample_and_keeps_the_mean():
    image = disk(12).repeat(2, 1, 1, 1)
    blurred = morphology_jitter(image, torch.ones(2), torch.tensor([0.0, 1.5]), max_sigma=1.5)
    assert torch.allclose(blurred[0], image[0], atol=1e-6)               # sigma 0: the identity kernel
    step = lambda x: float(x[0].diff(dim=1).abs().max())                 # noqa: E731  the sharpest edge
    assert step(blurred[1]) < 0.6 * step(image[1])
    assert float(blurred[1].mean()) == pytest.approx(float(image[1].mean()), abs=0.01)
    assert torch.equal(blurred[1, 0], blurred[1, 2])                     # every channel alike


def test_off_by_default_and_then_the_same_draws_as_before():
    crops = torch.randint(0, 256, (16, 32, 32, 6), dtype=torch.uint8)
    plain = augment(crops, torch.Generator().manual_seed(3), 0.1, "cpu", 0.025, 0.5)
    again = augment(crops, torch.Generator().manual_seed(3), 0.1, "cpu", 0.025, 0.5, zoom=0.0, blur=0.0)
    assert torch.equal(plain, again)
    jittered = augment(crops, torch.Generator().manual_seed(3), 0.1, "cpu", 0.025, 0.5, zoom=0.1, blur=1.0)
    assert jittered.shape == plain.shape and not torch.equal(jittered, plain)
    assert float(jittered.min()) >= -1.0 and float(jittered.max()) <= 1.0


def test_the_config_names_the_fields_and_refuses_bad_values():
    config = TrainConfig.from_dict({"augment": {"scale": 0.1, "blur": 1.0}})
    assert (config.scale_jitter, config.blur_jitter) == (0.1, 1.0)
    assert (TrainConfig().scale_jitter, TrainConfig().blur_jitter) == (0.0, 0.0)
    with pytest.raises(ConfigError, match="augment.scale"):
        TrainConfig.from_dict({"augment": {"scale": 0.9}})
    with pytest.raises(ConfigError, match="augment.blur"):
        TrainConfig.from_dict({"augment": {"blur": -1}})
