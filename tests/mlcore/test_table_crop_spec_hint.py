"""A table cut with table_from_arrays' default (plain 64 px crops, 3 channels) handed to train_all with a default
config (which adds the wider view: 6 channels) is refused with the way out, not only the mismatch: mlcore/README's
library example did exactly this (an ML engineer's exploration found it)."""

import pytest

from mlcore.config import TrainConfig
from mlcore.train import train_all
from tests.mlcore.helpers import two_set_table


def test_plain_crops_for_a_default_config_say_how_to_cut_them():
    table, label_sets = two_set_table(images_per_set=1, crop_size=64)
    config = TrainConfig(epochs=1, samples_per_epoch=32, batch_size=16, num_threads=1)
    with pytest.raises(ValueError) as refused:
        train_all(table, label_sets, config, stages=["sparse"], validate_epochs=False)
    assert str(refused.value) == ("the model expects 64px crops with 6 channels, the table has 64px with 3: build the "
                                  "table with crop_size=config.crop_spec")
