import json

import numpy as np
import pytest

from mlcore.readers import read_dataset
from mlcore.synthetic import generate_nucleus_dataset
from mlcore.writers import write_dataset


def test_nucls_counts_match_the_data_readme(shared_data, count_classes):
    dataset = read_dataset("seed", shared_data / "nucls")
    assert dataset.name == "nucls" and dataset.format == "seed"
    assert dataset.label_set.name == "nucls"
    assert dataset.label_set.classes == ("tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus")
    assert len(dataset.images) == 10
    counts, unlabelled = count_classes(dataset)
    assert counts == {"tumor_any": 30, "nonTIL_stromal": 47, "sTIL": 238, "other_nucleus": 38}
    assert unlabelled == 105
    first = dataset.images[0]
    assert first.image.shape == (256, 256, 3) and first.image.dtype == np.uint8
    assert first.instance_map.dtype == np.int32
    assert first.source_path.endswith(".png")


def test_nucls_unlabelled_read_keeps_masks_only(shared_data):
    labelled = read_dataset("seed", shared_data / "nucls")
    masks_only = read_dataset("seed", shared_data / "nucls", labelled=False)
    assert masks_only.label_set is None and not masks_only.labelled
    assert all(item.classes == {} for item in masks_only.images)
    for a, b in zip(labelled.images, masks_only.images):
        assert a.name == b.name
        np.testing.assert_array_equal(a.instance_map, b.instance_map)


def test_names_and_class_override(shared_data):
    dataset = read_dataset("seed", shared_data / "nucls", name="breast", label_set_name="nucls_super",
                           class_names=["T", "S", "L", "O"])
    assert dataset.name == "breast"
    assert dataset.label_set.name == "nucls_super"
    assert dataset.label_set.classes == ("T", "S", "L", "O")


def test_synthetic_seed_dataset_round_trips_exactly(tmp_path):
    original = generate_nucleus_dataset(n_images=3, nuclei_per_image=25, seed=4, size=(96, 128),
                                        unlabelled_fraction=0.3)
    write_dataset(original, "seed", tmp_path / "ds")
    back = read_dataset("seed", tmp_path / "ds")
    assert back.label_set.classes == original.label_set.classes
    assert back.label_set.colors == original.label_set.colors
    for a, b in zip(original.images, back.images):
        assert a.name == b.name
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.instance_map, b.instance_map)
        assert a.classes == b.classes
    assert any(len(item.classes) < item.instance_map.max() for item in back.images)  # some unlabelled


def test_class_index_minus_one_means_unlabelled_and_class_names_replace_missing_classes_json(tmp_path):
    root = tmp_path / "ds"
    dataset = generate_nucleus_dataset(n_images=1, nuclei_per_image=5, seed=1, size=(64, 64))
    write_dataset(dataset, "seed", root)
    (root / "classes.json").unlink()
    item = dataset.images[0]
    np.save(root / "types" / f"{item.name}.npy", np.array([[1, 0], [2, -1]]))
    back = read_dataset("seed", root, class_names=["a", "b", "c"])
    assert back.label_set.classes == ("a", "b", "c")
    assert back.images[0].classes == {1: 0}


def test_classes_json_colors_are_used(tmp_path):
    root = tmp_path / "ds"
    write_dataset(generate_nucleus_dataset(n_images=1, nuclei_per_image=3, seed=1, size=(48, 48)), "seed", root)
    (root / "classes.json").write_text(json.dumps({"classes": ["x", "y", "z"],
                                                   "colors": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}))
    assert read_dataset("seed", root).label_set.colors == ((1, 2, 3), (4, 5, 6), (7, 8, 9))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "I;16"])
def test_images_in_other_modes_are_read_as_rgb_uint8(tmp_path, mode):
    from PIL import Image

    from mlcore.readers import read_rgb
    grey = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (4, 1))
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 256)
    else:
        image = Image.fromarray(grey).convert(mode)
    image.save(tmp_path / "x.png")
    rgb = read_rgb(tmp_path / "x.png")
    assert rgb.shape == (4, 10, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], grey)
    np.testing.assert_array_equal(rgb[..., 2], grey)
