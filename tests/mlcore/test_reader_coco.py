import json

import numpy as np

from mlcore.readers import read_dataset
from mlcore.readers.coco import decode_rle_string, rle_to_mask
from mlcore.writers import compress_rle_counts, encode_rle, save_rgb


def test_pannuke_polygons_counts_match_the_data_readme(shared_data, count_classes):
    dataset = read_dataset("coco", shared_data / "pannuke")
    assert len(dataset.images) == 30
    assert dataset.label_set.classes == ("neoplastic", "inflammatory", "softtissue", "dead", "epithelial")
    counts, unlabelled = count_classes(dataset)
    # 16 images have overlapping polygons (464 pixels); the later one wins and none vanishes entirely.
    assert counts == {"neoplastic": 124, "inflammatory": 84, "softtissue": 147, "epithelial": 273}
    assert counts["dead"] == 0 and unlabelled == 0


def test_pannuke_breast_binary_rle_counts_match_the_data_readme(shared_data, count_classes):
    dataset = read_dataset("coco", shared_data / "pannuke_breast_binary" / "annotations.json")
    assert dataset.name == "pannuke_breast_binary"
    assert len(dataset.images) == 25
    assert dataset.label_set.classes == ("Neoplastic", "No-neoplastic")
    counts, unlabelled = count_classes(dataset)
    assert counts == {"Neoplastic": 216, "No-neoplastic": 415} and unlabelled == 0


def test_rle_masks_have_the_annotated_areas(shared_data):
    path = shared_data / "pannuke_breast_binary" / "annotations.json"
    content = json.loads(path.read_text())
    first = content["images"][0]
    annotations = [a for a in content["annotations"] if a["image_id"] == first["id"]]
    item = next(i for i in read_dataset("coco", path).images if i.name == first["file_name"].rsplit(".", 1)[0])
    areas = np.bincount(item.instance_map.ravel())[1:]
    assert areas.tolist() == [a["area"] for a in annotations]


def test_compressed_rle_known_vectors():
    assert decode_rle_string("352") == [3, 5, 2]
    assert decode_rle_string("T3") == [100]           # 100 = 4 + 3 * 32: two 5-bit groups
    assert decode_rle_string("555L") == [5, 5, 5, 1]  # the fourth count is stored as 1 - 5 = -4 ("L")
    assert decode_rle_string("0") == [0]
    assert compress_rle_counts([3, 5, 2]) == "352"
    assert compress_rle_counts([100]) == "T3"
    assert compress_rle_counts([5, 5, 5, 1]) == "555L"


def test_compressed_rle_round_trips_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(rng.integers(1, 60, 2))
        mask = rng.random(shape) < rng.uniform(0.01, 0.9)
        rle = encode_rle(mask)
        assert sum(rle["counts"]) == mask.size
        np.testing.assert_array_equal(rle_to_mask(rle["counts"], rle["size"]), mask)
        text = compress_rle_counts(rle["counts"])
        assert decode_rle_string(text) == rle["counts"]
        np.testing.assert_array_equal(rle_to_mask(text, rle["size"]), mask)


def test_rle_is_column_major():
    # 2 x 3 image, counts [1, 2, 3]: first pixel background, then the next two in column order.
    mask = rle_to_mask([1, 2, 3], [2, 3])
    np.testing.assert_array_equal(mask, np.array([[0, 1, 0], [1, 0, 0]], bool))


def _coco(tmp_path, annotations, images=None, categories=None):
    save_rgb(tmp_path / "images" / "a.png", np.zeros((10, 10, 3), np.uint8))
    save_rgb(tmp_path / "images" / "empty.png", np.zeros((10, 10, 3), np.uint8))
    content = {"images": images or [{"id": 1, "file_name": "a.png", "height": 10, "width": 10},
                                    {"id": 2, "file_name": "empty.png", "height": 10, "width": 10}],
               "annotations": annotations,
               "categories": categories or [{"id": 7, "name": "late"}, {"id": 3, "name": "early"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(content))
    return tmp_path


def _square(x0, y0, x1, y1):
    """A polygon around pixels x0..x1-1, y0..y1-1 through their centres, in COCO coordinates."""
    return [[x0 + .5, y0 + .5, x1 - .5, y0 + .5, x1 - .5, y1 - .5, x0 + .5, y1 - .5]]


def test_overlaps_later_wins_hidden_annotation_dropped_and_empty_images_kept(tmp_path):
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": _square(0, 0, 4, 4)},
        {"id": 2, "image_id": 1, "category_id": 7, "segmentation": _square(1, 1, 3, 3)},  # hidden by #4
        {"id": 3, "image_id": 1, "category_id": 0, "segmentation": _square(6, 6, 9, 9)},  # unlabelled
        {"id": 4, "image_id": 1, "category_id": 7, "segmentation": _square(0, 0, 3, 4)},
    ]
    dataset = read_dataset("coco", _coco(tmp_path, annotations))
    assert dataset.label_set.classes == ("early", "late")  # category id order
    a, empty = dataset.images
    assert empty.name == "empty" and empty.instance_map.max() == 0
    expected = np.zeros((10, 10), np.int32)
    expected[0:4, 0:4] = 1
    expected[6:9, 6:9] = 2
    expected[0:4, 0:3] = 3
    np.testing.assert_array_equal(a.instance_map, expected)
    assert a.classes == {1: 0, 3: 1}
    assert a.left_out == {"covered": 1} and empty.left_out == {}


def test_annotations_that_keep_no_pixel_are_counted_by_reason(tmp_path):
    """As GeoJSON features: polygons and RLE alike, one wholly covered by later ones, one wholly outside the
    image, one with no outline are left out and counted."""
    covered = np.zeros((10, 10), bool)
    covered[1:3, 1:3] = True
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": encode_rle(covered)},   # under #2
        {"id": 2, "image_id": 1, "category_id": 3, "segmentation": _square(0, 0, 4, 4)},
        {"id": 3, "image_id": 1, "category_id": 3, "segmentation": _square(12, 0, 15, 3)},   # right of the image
        {"id": 4, "image_id": 1, "category_id": 7, "segmentation": encode_rle(np.zeros((10, 10), bool))},
        {"id": 5, "image_id": 1, "category_id": 7, "segmentation": []},
        {"id": 6, "image_id": 2, "category_id": 7, "segmentation": _square(5, 5, 8, 8)},   # under #7
        {"id": 7, "image_id": 2, "category_id": 7, "segmentation": _square(4, 4, 9, 9)},
    ]
    a, other = read_dataset("coco", _coco(tmp_path, annotations)).images
    assert a.instance_map.max() == 1 and a.classes == {1: 0}
    assert a.left_out == {"covered": 1, "outside": 1, "empty": 2}
    assert other.left_out == {"covered": 1} and other.instance_map.max() == 1


def test_compressed_and_uncompressed_rle_annotations(tmp_path):
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:8] = True
    rle = encode_rle(mask)
    annotations = [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": rle},
                   {"id": 2, "image_id": 1, "category_id": 7,
                    "segmentation": {"counts": compress_rle_counts(encode_rle(np.eye(10, dtype=bool))["counts"]),
                                     "size": [10, 10]}}]
    item = read_dataset("coco", _coco(tmp_path, annotations)).images[0]
    expected = np.where(mask, 1, 0)
    expected[np.eye(10, dtype=bool)] = 2
    np.testing.assert_array_equal(item.instance_map, expected)
    assert item.classes == {1: 0, 2: 1}


def test_unlabelled_read_ignores_categories(tmp_path):
    annotations = [{"id": 1, "image_id": 1, "category_id": 99, "segmentation": _square(0, 0, 2, 2)}]
    dataset = read_dataset("coco", _coco(tmp_path, annotations), labelled=False)
    assert dataset.label_set is None and dataset.images[0].classes == {}
    assert dataset.images[0].instance_map.sum() == 4
