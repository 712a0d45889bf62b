"""Tiles segmented by cellpose or StarDist: the seed layout with label images as masks (``masks/<stem>.png|tif``,
or as cellpose names them, ``<stem>_cp_masks.png``), read unlabelled, so a lab's own segmentations enter the
product to be classified and reviewed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mlcore.readers import detect_format, read_dataset
from mlcore.readers._common import load_npy
from mlcore.types import DataError, NoClassNames
from mlcore.writers import save_rgb


def instance_map(seed: int, size=(40, 56), count: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(size, np.int32)
    for instance_id in range(1, count + 1):
        y, x = rng.integers(4, size[0] - 8), rng.integers(4, size[1] - 8)
        labels[y:y + rng.integers(3, 7), x:x + rng.integers(3, 7)] = instance_id
    return labels


def pixel_sets(labels: np.ndarray) -> set[frozenset]:
    return {frozenset(np.flatnonzero(labels.ravel() == i).tolist()) for i in np.unique(labels) if i}


def tiles(root, masks: dict[str, tuple[str, np.ndarray]]):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, (mask_name, labels) in masks.items():
        save_rgb(root / "images" / f"{stem}.png", np.full((*labels.shape, 3), 180 + len(stem), np.uint8))
        if mask_name.endswith(".npy"):
            np.save(root / "masks" / mask_name, labels)
        else:
            assert cv2.imwrite(str(root / "masks" / mask_name), labels)


def test_cellpose_and_stardist_label_images_read_as_unlabelled_nuclei(tmp_path):
    written = {
        "a": ("a_cp_masks.png", instance_map(0).astype(np.uint16)),           # cellpose --save_png
        "b": ("b_masks.tif", instance_map(1).astype(np.uint16) * 300),        # sparse 16-bit ids
        "c": ("c.tif", instance_map(2, count=40).astype(np.int32) + 0),       # StarDist's int32 TIFF
        "d": ("d.png", instance_map(3).astype(np.uint8)),
    }
    tiles(tmp_path, written)
    assert detect_format(tmp_path) == "seed"
    dataset = read_dataset("seed", tmp_path, labelled=False)
    assert dataset.label_set is None
    by_name = {image.name: image for image in dataset.images}
    assert sorted(by_name) == ["a", "b", "c", "d"]
    for stem, (_, labels) in written.items():
        assert pixel_sets(by_name[stem].instance_map) == pixel_sets(labels), stem
        assert by_name[stem].classes == {}
    # Read as labelled, the missing types/ says how to read masks only (the web page: uncheck Labelled).
    with pytest.raises(NoClassNames):
        read_dataset("seed", tmp_path)


def test_a_label_image_gives_the_same_nuclei_as_the_npy_it_was_saved_from(shared_data, tmp_path):
    """NuCLS's own masks saved as 16-bit PNGs, as a segmentation tool would: the same nuclei."""
    source = shared_data / "nucls" / "masks"
    stems = sorted(path.stem for path in source.glob("*.npy"))[:6]
    assert stems, "no NuCLS masks in the shared data"
    masks = {stem: load_npy(source / f"{stem}.npy", mask=True) for stem in stems}
    tiles(tmp_path / "png", {stem: (f"{stem}_cp_masks.png", labels.astype(np.uint16)) for stem, labels in masks.items()})
    tiles(tmp_path / "npy", {stem: (f"{stem}.npy", labels) for stem, labels in masks.items()})
    from_png = read_dataset("seed", tmp_path / "png", labelled=False)
    from_npy = read_dataset("seed", tmp_path / "npy", labelled=False)
    for png, npy in zip(from_png.images, from_npy.images):
        assert png.name == npy.name and pixel_sets(png.instance_map) == pixel_sets(npy.instance_map)
    assert sum(len(np.unique(image.instance_map)) - 1 for image in from_png.images) > 50


@pytest.mark.parametrize("masks, problem", [
    ({"a.png": 1, "a_cp_masks.png": 1}, "two masks for image 'a' (a.png and a_cp_masks.png)"),
    ({"a.png": 1, "z_cp_masks.png": 1}, "z_cp_masks.png: mask without an image (no images/z.png or .jpg)"),
    ({"a.jpg": 1}, "a.jpg: a JPEG cannot hold an instance map"),
])
def test_mask_files_that_cannot_be_matched_or_read_are_named(tmp_path, masks, problem):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    labels = instance_map(4).astype(np.uint8)
    save_rgb(tmp_path / "images" / "a.png", np.zeros((*labels.shape, 3), np.uint8))
    for name in masks:
        assert cv2.imwrite(str(tmp_path / "masks" / name), labels)
    with pytest.raises(DataError) as refused:
        read_dataset("seed", tmp_path, labelled=False)
    assert problem in str(refused.value)
