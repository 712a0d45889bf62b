import json
from collections import Counter

import numpy as np
import pytest
import scipy.io

from mlcore.readers import read_dataset
from mlcore.readers._common import tile_group
from mlcore.synthetic import generate_nucleus_dataset
from mlcore.writers import save_rgb, write_dataset


@pytest.fixture(scope="module")
def consep(shared_data):
    return read_dataset("hovernet", shared_data / "consep")


def test_consep_counts_match_the_data_readme(consep, count_classes):
    assert len(consep.images) == 432
    assert consep.label_set.classes == ("other", "inflammatory", "epithelial", "spindle-shaped")
    counts, unlabelled = count_classes(consep)
    assert counts == {"other": 432, "inflammatory": 4507, "epithelial": 6609, "spindle-shaped": 6668}
    assert unlabelled == 0


def test_consep_colours_come_from_type_info(consep):
    assert consep.label_set.colors == ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))


def test_consep_patches_are_grouped_by_tile(consep):
    groups = Counter(item.group for item in consep.images)
    assert len(groups) == 27 and set(groups.values()) == {16}
    by_name = {item.name: item.group for item in consep.images}
    assert by_name["train_18_011"] == "train_18"


@pytest.mark.parametrize("name, group", [("train_18_011", "train_18"), ("test_3_0", "test_3"),
                                         ("slide_a_12_004", "slide_a_12"), ("train_1", "train_1"),
                                         ("image", "image"), ("tile_0003", "tile_0003")])
def test_tile_group_rule(name, group):
    assert tile_group(name) == group


def _write_one(root, inst_map, image_shape=None, **variables):
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "Labels" / "a_1_0.mat", {"inst_map": inst_map, **variables})
    shape = image_shape or inst_map.shape
    save_rgb(root / "Images" / "a_1_0.png", np.full((*shape, 3), 200, np.uint8))


def test_inst_type_zero_is_unlabelled_and_class_names_replace_type_info(tmp_path):
    inst_map = np.zeros((20, 20), np.int32)
    inst_map[2:5, 2:5], inst_map[10:14, 10:14], inst_map[15:18, 2:6] = 1, 2, 3
    _write_one(tmp_path, inst_map.astype(np.float64), inst_type=np.array([[2], [0], [1]]))
    dataset = read_dataset("hovernet", tmp_path, class_names=["x", "y"])
    item = dataset.images[0]
    assert dataset.label_set.classes == ("x", "y")
    assert item.classes == {1: 1, 3: 0}
    assert item.group == "a_1"
    np.testing.assert_array_equal(item.instance_map, inst_map)


def test_type_map_gives_the_classes_when_inst_type_is_absent(tmp_path):
    inst_map = np.zeros((20, 20), np.int32)
    inst_map[2:6, 2:6], inst_map[10:14, 10:14] = 1, 2
    type_map = np.where(inst_map == 1, 2, 0)
    type_map[10:14, 10:14] = 1
    type_map[10, 10] = 2  # a stray pixel does not outvote the majority
    _write_one(tmp_path, inst_map, type_map=type_map)
    (tmp_path / "type_info.json").write_text(json.dumps({"0": ["nolabel", [0, 0, 0]], "1": ["p", [1, 1, 1]],
                                                         "2": ["q", [2, 2, 2]]}))
    item = read_dataset("hovernet", tmp_path).images[0]
    assert item.classes == {1: 1, 2: 0}


def test_synthetic_hovernet_round_trip(tmp_path):
    original = generate_nucleus_dataset(n_images=2, nuclei_per_image=20, seed=3, size=(80, 96),
                                        unlabelled_fraction=0.25)
    write_dataset(original, "hovernet", tmp_path)
    back = read_dataset("hovernet", tmp_path)
    assert back.label_set == original.label_set.__class__(back.label_set.name, original.label_set.classes,
                                                          original.label_set.colors)
    for a, b in zip(original.images, back.images):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.instance_map, b.instance_map)
        assert a.classes == b.classes


def test_random_access_read_gives_the_same_images_as_iteration(shared_data):
    from mlcore.readers import open_dataset

    reader = open_dataset("hovernet", shared_data / "consep")
    streamed = [image for _, image in zip(range(3), reader)]
    for index, image in enumerate(streamed):
        again = reader.read(index)
        assert again.name == image.name and again.classes == image.classes
        np.testing.assert_array_equal(again.instance_map, image.instance_map)
