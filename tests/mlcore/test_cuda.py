"""The CUDA path itself: a training with the default backbone on a GPU, its checkpoint read back on a CPU.

Skipped on a machine without CUDA (CI's): there the CPU fallback is what the other tests run, and
``test_backbones`` checks what ``auto`` resolves to on each kind of device. Run on a GPU machine with
``python -m pytest tests/mlcore/test_cuda.py``.
"""

import numpy as np
import pytest
import torch

from mlcore.checkpoint import load_checkpoint
from mlcore.config import TrainConfig
from mlcore.infer import infer_image
from mlcore.predict import predict
from mlcore.train import train_all
from mlcore.types import Cancelled
from tests.mlcore.helpers import disk_image, stop_in_second_epoch, two_set_table

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (this machine has none)")


def test_auto_trains_a_resnet_on_the_gpu_and_its_checkpoint_predicts_the_same_on_a_cpu(tmp_path):
    table, _ = two_set_table(images_per_set=3)
    config = TrainConfig(batch_size=32, samples_per_epoch=None, correlation_views=1,
                         epochs={"sparse": 2, "correlation": 1, "completion": 1})
    result = train_all(table, config=config, out_dir=tmp_path)
    assert next(result.model.parameters()).device.type == "cuda"
    assert [h["stage"] for h in result.history].count("completion") == 1

    loaded = load_checkpoint(tmp_path / "model.pt", "cpu")
    assert loaded.raw["architecture"]["backbone"] == "resnet18"
    assert loaded.raw["architecture"]["backbone_kwargs"] == {"small_input": True}
    assert next(loaded.model.parameters()).device.type == "cpu"

    on_gpu = predict(result.model, table.crops)
    on_cpu = predict(loaded.model, table.crops)
    for name in ("A", "B"):
        # cuDNN convolutions round through TF32: the same classes, probabilities within a hundredth.
        assert (on_gpu[name].labels == on_cpu[name].labels).mean() >= 0.98
        np.testing.assert_allclose(on_gpu[name].probs, on_cpu[name].probs, atol=1e-2)

    # Inference of a whole image on the GPU gives every instance a class in every label set.
    image, instance_map, _ = disk_image(np.random.default_rng(1), size=96, count=8)
    gpu_model = load_checkpoint(tmp_path / "model.pt", "cuda").model
    inference = infer_image(gpu_model, image, instance_map)
    assert len(inference.geometry.ids) == len(np.unique(instance_map[instance_map > 0]))
    assert {name: len(p.labels) for name, p in inference.predictions.items()} == {
        "A": len(inference.geometry.ids), "B": len(inference.geometry.ids)}


def test_a_training_cancelled_on_the_gpu_resumes_there_from_its_last_checkpoint(tmp_path):
    table, _ = two_set_table(images_per_set=3)
    config = TrainConfig(batch_size=32, samples_per_epoch=None, epochs={"sparse": 2, "correlation": 1, "completion": 1})
    should_stop = stop_in_second_epoch(table, config, tmp_path / "probe")
    with pytest.raises(Cancelled):
        train_all(table, config=config, stages=("sparse",), should_stop=should_stop, out_dir=tmp_path / "run")
    resumed = train_all(table, config=config, stages=("sparse",), init_checkpoint=tmp_path / "run" / "last.pt",
                        out_dir=tmp_path / "run")
    assert [h["epoch"] for h in resumed.history] == [2]
    assert next(resumed.model.parameters()).device.type == "cuda"
