import numpy as np
import pytest

from mlcore.readers import read_dataset
from mlcore.readers.pannuke import PANNUKE_CLASSES
from mlcore.types import DataError


def _fold(root, float_images=True, scale=255.0):
    """Two 32 x 32 PanNuke-style images: instance ids per class channel, ids unique within an image."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 32, 32, 3)) * scale
    masks = np.zeros((2, 32, 32, 6))
    masks[0, 2:6, 2:6, 0] = 5        # neoplastic
    masks[0, 10:14, 10:14, 0] = 9    # neoplastic
    masks[0, 20:24, 2:6, 4] = 17     # epithelial
    masks[0, 25:30, 25:30, 1] = 3    # inflammatory
    masks[0, 26:28, 26:28, 2] = 4    # connective, painted over inflammatory (later channel wins)
    masks[1, 0:3, 0:3, 3] = 2        # dead
    masks[..., 5] = (masks[..., :5].sum(axis=3) == 0)
    root.mkdir(exist_ok=True)
    np.save(root / "images.npy", images if float_images else images.astype(np.uint8))
    np.save(root / "masks.npy", masks)
    np.save(root / "types.npy", np.array(["Breast", "Colon"]))
    return images, masks


def test_instances_are_renumbered_across_channels(tmp_path):
    images, _ = _fold(tmp_path / "fold1")
    dataset = read_dataset("pannuke", tmp_path / "fold1")
    assert dataset.label_set.classes == PANNUKE_CLASSES
    first, second = dataset.images
    assert first.name == "fold1_00000" and second.name == "fold1_00001"
    np.testing.assert_array_equal(first.image, np.round(images[0]).astype(np.uint8))
    m = first.instance_map
    assert sorted(np.unique(m).tolist()) == [0, 1, 2, 3, 4, 5]
    assert m[3, 3] == 1 and m[11, 11] == 2          # neoplastic ids in id order
    assert m[27, 25] == 3 and m[27, 27] == 4        # inflammatory, then connective on top
    assert m[21, 3] == 5                            # epithelial
    assert first.classes == {1: 0, 2: 0, 3: 1, 4: 2, 5: 4}
    assert second.classes == {1: 3} and (second.instance_map == 1).sum() == 9


def test_uint8_and_unit_float_images(tmp_path):
    images, _ = _fold(tmp_path / "u8", float_images=False)
    np.testing.assert_array_equal(read_dataset("pannuke", tmp_path / "u8").images[0].image, images[0].astype(np.uint8))
    unit, _ = _fold(tmp_path / "unit", scale=1.0)
    np.testing.assert_array_equal(read_dataset("pannuke", tmp_path / "unit").images[0].image,
                                  np.round(unit[0] * 255).astype(np.uint8))


def test_class_names_override_and_unlabelled_read(tmp_path):
    _fold(tmp_path / "f")
    names = ["neo", "inf", "con", "dead", "epi"]
    assert read_dataset("pannuke", tmp_path / "f", class_names=names).label_set.classes == tuple(names)
    masks_only = read_dataset("pannuke", tmp_path / "f", labelled=False)
    assert masks_only.label_set is None and all(i.classes == {} for i in masks_only.images)
    with pytest.raises(DataError, match=r"masks\.npy.*3 class names given.*defines 5 classes"):
        read_dataset("pannuke", tmp_path / "f", class_names=["a", "b", "c"])
