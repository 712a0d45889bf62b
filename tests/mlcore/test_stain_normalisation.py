"""Macenko stain normalisation (crop.stain_normalisation): images stained with other vectors and amounts come
back near the reference's colours, a source's estimate is made once from all its images, and the option
travels through the config, the crop cache, checkpoints and slide inference."""

from __future__ import annotations

import numpy as np
import pytest

from mlcore.checkpoint import load_checkpoint, save_checkpoint
from mlcore.config import ConfigError, TrainConfig
from mlcore.crops import CropSpec
from mlcore.data import ImageRecord, table_from_arrays
from mlcore.model import CrossTrainedModel
from mlcore.stain import (BACKGROUND, MIN_TISSUE_PIXELS, StainEstimate, _reference, estimate_stain, normalise_stain,
                          tissue_mask)
from mlcore.types import LabelSet


def stained(amounts: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """An RGB image from per-pixel stain amounts (H x W x 2) and stain vectors (3 x 2), by Beer-Lambert."""
    density = amounts @ vectors.T
    return np.clip(np.rint(BACKGROUND * np.exp(-density)), 0, 255).astype(np.uint8)


def tissue_amounts(seed: int, size: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Stain amounts of a synthetic H&E field: eosin-stained stroma, haematoxylin-dense nuclei, some glass.
    Also the instance map of the nuclei."""
    rng = np.random.default_rng(seed)
    amounts = np.zeros((size, size, 2))
    amounts[..., 1] = rng.uniform(0.8, 1.4, (size, size))            # stroma
    amounts[..., 0] = rng.uniform(0.0, 0.25, (size, size))
    amounts[: size // 8] = 0.0                                        # glass along the top
    instance_map = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for instance_id in range(1, 26):
        cy, cx = rng.integers(size // 8 + 8, size - 8, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(16, 49)
        instance_map[disc] = instance_id
        amounts[disc, 0] = rng.uniform(1.4, 2.0, disc.sum())
        amounts[disc, 1] = rng.uniform(0.1, 0.4, disc.sum())
    return amounts, instance_map


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=0)


# Another lab's stains: haematoxylin bluer, eosin pinker, both weaker than the reference's.
OTHER_VECTORS = unit(np.array([[0.40, 0.18], [0.70, 0.90], [0.59, 0.40]]))
OTHER_SCALE = np.array([0.6, 0.7])


def test_the_same_tissue_in_two_labs_stains_comes_out_alike():
    reference = _reference()
    amounts, _ = tissue_amounts(0)
    as_reference = stained(amounts, reference.vectors)
    as_other_lab = stained(amounts * OTHER_SCALE, OTHER_VECTORS)
    before = np.abs(as_other_lab.astype(int) - as_reference).mean()
    after = np.abs(normalise_stain(as_other_lab).astype(int) - normalise_stain(as_reference)).mean()
    assert before > 25
    assert after < before / 5, (before, after)


def test_the_estimate_finds_the_stain_vectors():
    amounts, _ = tissue_amounts(1)
    estimate = estimate_stain([stained(amounts * OTHER_SCALE, OTHER_VECTORS)])
    cosines = (unit(estimate.vectors) * OTHER_VECTORS).sum(axis=0)
    assert (cosines > 0.97).all(), cosines


def test_too_little_tissue_leaves_the_image_as_it_is():
    glass = np.full((100, 100, 3), 235, np.uint8)
    glass[:20, :20] = (120, 60, 150)                  # 400 tissue pixels
    assert tissue_mask(glass).sum() < MIN_TISSUE_PIXELS
    assert estimate_stain([glass]) is None
    assert normalise_stain(glass) is glass
    assert normalise_stain(glass, "none") is glass
    with pytest.raises(ValueError, match="reinhard"):
        normalise_stain(glass, "reinhard")


def test_a_source_is_estimated_once_from_all_its_images_and_read_once():
    amounts, _ = tissue_amounts(2, size=256)
    image = stained(amounts * OTHER_SCALE, OTHER_VECTORS)
    tiles = [image[y:y + 64, x:x + 64] for y in range(0, 256, 64) for x in range(0, 256, 64)]
    read = []

    def source():
        for tile in tiles:
            read.append(1)
            yield tile

    from_tiles = estimate_stain(source())
    assert len(read) == len(tiles)
    whole = estimate_stain([image])
    # Tiling does not change the estimate: every tissue pixel is drawn alike.
    np.testing.assert_allclose(from_tiles.vectors, whole.vectors, atol=1e-9)
    np.testing.assert_allclose(from_tiles.max_amounts, whole.max_amounts, atol=1e-9)
    # A glass-heavy tile normalised with its source's estimate matches the whole image normalised; with its
    # own estimate it does not.
    top = tiles[1]
    with_source = normalise_stain(top, estimate=whole)
    np.testing.assert_array_equal(with_source, normalise_stain(image, estimate=whole)[0:64, 64:128])
    assert not np.array_equal(normalise_stain(top), with_source)


def test_the_pool_stays_bounded_on_a_large_source(monkeypatch):
    import mlcore.stain as stain

    monkeypatch.setattr(stain, "ESTIMATE_PIXELS", 5_000)
    amounts, _ = tissue_amounts(3)
    image = stained(amounts * OTHER_SCALE, OTHER_VECTORS)
    fitted = []
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    real_fit = NumpyMacenkoNormalizer.fit

    def spy(self, pixels, **kwargs):
        fitted.append(len(pixels))
        return real_fit(self, pixels, **kwargs)

    monkeypatch.setattr("torchstain.numpy.normalizers.NumpyMacenkoNormalizer.fit", spy)
    estimate = stain.estimate_stain(image for _ in range(20))
    assert 5_000 // 2 <= fitted[0] <= 10_000, fitted
    cosines = (unit(estimate.vectors) * OTHER_VECTORS).sum(axis=0)
    assert (cosines > 0.95).all()


def test_config_and_crop_spec_carry_the_option():
    config = TrainConfig.from_dict({"crop": {"stain_normalisation": "macenko"}})
    assert config.crop_spec == CropSpec(64, False, 1.0, "macenko", context_view=2)
    assert config.crop_spec.describe()["stain_normalisation"] == "macenko"
    assert TrainConfig().crop_spec.stain_normalisation == "none"
    with pytest.raises(ConfigError, match="crop.stain_normalisation: 'reinhard' is not one of none, macenko"):
        TrainConfig.from_dict({"crop": {"stain_normalisation": "reinhard"}})
    with pytest.raises(ValueError, match="unknown stain normalisation"):
        CropSpec(stain_normalisation="vahadane")


def two_datasets():
    records = []
    for index in range(3):
        amounts, instance_map = tissue_amounts(10 + index)
        records.append(ImageRecord(stained(amounts * OTHER_SCALE, OTHER_VECTORS), instance_map,
                                   {"A": {i: i % 2 for i in range(1, 26)}}, "other_lab", f"o{index}"))
        amounts, instance_map = tissue_amounts(20 + index)
        records.append(ImageRecord(stained(amounts, _reference().vectors), instance_map,
                                   {"A": {i: i % 2 for i in range(1, 26)}}, "reference_lab", f"r{index}"))
    return records, [LabelSet("A", ("a0", "a1"))]


def test_training_crops_are_cut_from_images_normalised_per_dataset(tmp_path):
    records, label_sets = two_datasets()
    spec = CropSpec(32, stain_normalisation="macenko")
    table = table_from_arrays(records, label_sets, cache_dir=tmp_path, crop_size=spec)
    plain = table_from_arrays(records, label_sets, cache_dir=tmp_path, crop_size=32)
    assert table.crops.shape == plain.crops.shape and not np.array_equal(table.crops, plain.crops)
    assert len(list(tmp_path.glob("crops-*.npy"))) == 4       # the cache keys the option: 2 datasets x 2 specs
    other = [record for record in records if record.dataset == "other_lab"]
    estimate = estimate_stain(record.image for record in other)
    expected, _ = spec.cut(other[0].image, other[0].instance_map, stain=estimate)
    rows = table.image_index == 0
    np.testing.assert_array_equal(table.crops[rows], expected)
    # The two labs' crops are closer in colour after normalisation than before.
    def gap(crops):
        means = [crops[table.dataset_index == d].reshape(-1, 3).mean(0) for d in (0, 1)]
        return np.abs(means[0] - means[1]).sum()
    assert gap(table.crops) < gap(plain.crops) / 2
    # A second build reads the cache: the same crops.
    np.testing.assert_array_equal(table_from_arrays(records, label_sets, cache_dir=tmp_path, crop_size=spec).crops,
                                  table.crops)


def test_a_checkpoint_keeps_the_option_and_an_old_one_loads_without_it(tmp_path):
    label_sets = [LabelSet("A", ("a0", "a1"))]
    model = CrossTrainedModel(label_sets, "small", {"width": 4}, crop=CropSpec(stain_normalisation="macenko"))
    config = TrainConfig(stain_normalisation="macenko", backbone_kwargs={"width": 4})
    path = save_checkpoint(tmp_path / "model.pt", model, "sparse", 0, True, config)
    loaded = load_checkpoint(path)
    assert loaded.model.crop_spec.stain_normalisation == "macenko"
    assert loaded.raw["crop"]["stain_normalisation"] == "macenko"

    import torch

    state = torch.load(path, weights_only=True)
    del state["architecture"]["crop"]["stain_normalisation"]
    del state["config"]["stain_normalisation"]
    torch.save(state, path)
    assert load_checkpoint(path).model.crop_spec.stain_normalisation == "none"


def test_a_slide_is_one_source(tmp_path):
    from mlcore.infer import slide_stain_estimate
    from mlcore.slides import open_slide, write_pyramidal_tiff

    amounts, _ = tissue_amounts(4, size=1024)
    image = stained(amounts * OTHER_SCALE, OTHER_VECTORS)
    path = write_pyramidal_tiff(tmp_path / "slide.tif", image)
    with open_slide(path) as slide:
        estimate = slide_stain_estimate(slide, 1.0, regions=4, size=256)
    assert isinstance(estimate, StainEstimate)
    # Four windows of the slide give the estimate of the whole image.
    whole = estimate_stain([image])
    assert ((unit(estimate.vectors) * unit(whole.vectors)).sum(axis=0) > 0.999).all()
    np.testing.assert_allclose(estimate.max_amounts, whole.max_amounts, rtol=0.03)
    glass = write_pyramidal_tiff(tmp_path / "glass.tif", np.full((600, 600, 3), 240, np.uint8))
    with open_slide(glass) as slide:
        assert slide_stain_estimate(slide, 1.0) is None


def test_slide_inference_cuts_every_region_with_the_slides_one_estimate(tmp_path, monkeypatch):
    import mlcore.infer as infer
    from mlcore.slide_nuclei import nuclei_from_instance_map
    from mlcore.slides import open_slide, write_pyramidal_tiff

    amounts, instance_map = tissue_amounts(5, size=768)
    path = write_pyramidal_tiff(tmp_path / "slide.tif", stained(amounts * OTHER_SCALE, OTHER_VECTORS))
    nuclei = [nucleus for _, nucleus in nuclei_from_instance_map(instance_map)]
    model = CrossTrainedModel([LabelSet("A", ("a0", "a1"))], "small", {"width": 4},
                              crop=CropSpec(stain_normalisation="macenko")).eval()
    estimates, given = [], []
    real_estimate, real_cut = infer.slide_stain_estimate, CropSpec.cut
    monkeypatch.setattr(infer, "slide_stain_estimate", lambda *a, **k: estimates.append(real_estimate(*a, **k))
                        or estimates[-1])
    monkeypatch.setattr(CropSpec, "cut", lambda self, *a, stain=None, **k: given.append(stain)
                        or real_cut(self, *a, stain=stain, **k))
    with open_slide(path) as slide:
        batches = list(infer.infer_slide(model, slide, iter(nuclei), batch_size=8, region_size=256))
    assert sum(len(batch.indices) for batch in batches) == len(nuclei) == 25
    assert len(estimates) == 1 and isinstance(estimates[0], StainEstimate)
    assert len(given) > 1 and all(stain is estimates[0] for stain in given)
