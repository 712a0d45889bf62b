"""Grey crops (``augment.grayscale``): a share of the training crops lose their colours, every view alike; off by
default, and then the draws are as before."""

import pytest
import torch

from mlcore.config import ConfigError, TrainConfig
from mlcore.data import augment


def crops(batch: int = 64, views: int = 2) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 32, 32, 3 * views), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


def grey_samples(x: torch.Tensor) -> torch.Tensor:
    """Which samples of (B, C, S, S) have equal R, G and B in each view."""
    views = x.reshape(x.shape[0], -1, 3, x.shape[2], x.shape[3])
    return ((views - views[:, :, :1]).abs().amax(dim=(1, 2, 3, 4)) < 1e-6)


def test_all_grey_at_one_and_none_at_zero_whatever_the_other_jitters():
    grey = augment(crops(), torch.Generator().manual_seed(3), 0.1, "cpu", 0.025, 0.5, grayscale=1.0)
    assert bool(grey_samples(grey).all())
    colour = augment(crops(), torch.Generator().manual_seed(3), 0.1, "cpu", 0.025, 0.5)
    assert not bool(grey_samples(colour).any())
    assert float(grey.min()) >= -1.0 and float(grey.max()) <= 1.0


def test_a_share_of_the_samples_turn_grey_and_the_grey_is_the_luma():
    grey = augment(crops(512), torch.Generator().manual_seed(5), 0.0, "cpu", 0.0, 0.0, grayscale=0.25)
    share = float(grey_samples(grey).float().mean())
    assert 0.15 < share < 0.35
    # Without the other jitters a grey sample is the luma of its dihedral copy: its values are those of the crop.
    one = augment(crops(1), torch.Generator().manual_seed(0), 0.0, "cpu", 0.0, 0.0, grayscale=1.0)
    luma = (crops(1).float() .reshape(1, 32, 32, 2, 3) @ torch.tensor([0.299, 0.587, 0.114])) * (2 / 255) - 1
    assert torch.allclose(torch.sort(one[0, 0].flatten()).values, torch.sort(luma[0, :, :, 0].flatten()).values,
                          atol=1e-5)


def test_off_by_default_and_then_the_same_draws_as_before():
    plain = augment(crops(), torch.Generator().manual_seed(3), 0.1, "cpu", 0.025, 0.5)
    again = augment(crops(), torch.Generator().manual_seed(3), 0.1, "cpu", 0.025, 0.5, grayscale=0.0)
    assert torch.equal(plain, again)


def test_the_config_names_the_field_and_refuses_bad_values():
    assert TrainConfig.from_dict({"augment": {"grayscale": 0.2}}).grayscale == 0.2
    assert TrainConfig().grayscale == 0.0
    with pytest.raises(ConfigError, match="augment.grayscale"):
        TrainConfig.from_dict({"augment": {"grayscale": 1.5}})
