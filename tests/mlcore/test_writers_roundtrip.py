import json

import cv2
import numpy as np
import pytest

from mlcore.readers import FORMATS, read_dataset
from mlcore.synthetic import generate_nucleus_dataset, generate_tile
from mlcore.types import LabelSet
from mlcore.writers import (nucleus_geometry, nucleus_outlines, save_rgb, write_coco, write_dataset, write_geojson,
                            write_seed_types)


@pytest.fixture(scope="module")
def tile():
    image, instance_map, classes = generate_tile(np.random.default_rng(7), (128, 160), 40, 3)
    classes = {i: c for i, c in classes.items() if i % 5}  # every fifth nucleus unlabelled
    return image, instance_map, classes, LabelSet("syn", ("a", "b", "c"))


def _match(original, back, classes, back_classes):
    """Pair instances by largest overlap; returns {original id: (IoU, class kept)}."""
    results = {}
    for instance_id in np.unique(original)[1:]:
        mask = original == instance_id
        candidates, counts = np.unique(back[mask], return_counts=True)
        counts, candidates = counts[candidates > 0], candidates[candidates > 0]
        assert candidates.size, f"instance {instance_id} lost"
        other = candidates[counts.argmax()]
        other_mask = back == other
        iou = (mask & other_mask).sum() / (mask | other_mask).sum()
        results[int(instance_id)] = (iou, classes.get(int(instance_id)) == back_classes.get(int(other)))
    return results


def test_geojson_export_import_keeps_every_nucleus_and_class(tmp_path, tile):
    image, instance_map, classes, label_set = tile
    save_rgb(tmp_path / "t.png", image)
    write_geojson(tmp_path / "t.geojson", instance_map, classes, label_set, object_type="detection")
    content = json.loads((tmp_path / "t.geojson").read_text())
    assert content["type"] == "FeatureCollection" and len(content["features"]) == instance_map.max()
    first = content["features"][0]["properties"]
    assert first["objectType"] == "detection" and first["instance_id"] == 1
    assert first["classification"]["name"] in label_set.classes and len(first["classification"]["color"]) == 3
    back = read_dataset("geojson", tmp_path, class_names=list(label_set.classes)).images[0]
    assert back.instance_map.max() == instance_map.max()
    matches = _match(instance_map, back.instance_map, classes, back.classes)
    assert all(kept for _, kept in matches.values())
    assert min(iou for iou, _ in matches.values()) > 0.8
    assert np.mean([iou for iou, _ in matches.values()]) > 0.95


def test_coco_polygon_export_import(tmp_path, tile):
    image, instance_map, classes, label_set = tile
    save_rgb(tmp_path / "images" / "t.png", image)
    write_coco(tmp_path / "annotations.json", [("t.png", instance_map, classes)], label_set)
    back = read_dataset("coco", tmp_path)
    assert back.label_set.classes == label_set.classes and back.label_set.colors == label_set.colors
    item = back.images[0]
    matches = _match(instance_map, item.instance_map, classes, item.classes)
    assert len(matches) == instance_map.max() == item.instance_map.max()
    assert all(kept for _, kept in matches.values())
    assert min(iou for iou, _ in matches.values()) > 0.8


@pytest.mark.parametrize("segmentation", ["rle", "compressed_rle"])
def test_coco_rle_export_import_is_exact(tmp_path, tile, segmentation):
    image, instance_map, classes, label_set = tile
    save_rgb(tmp_path / "images" / "t.png", image)
    write_coco(tmp_path / "annotations.json", [("t.png", instance_map, classes)], label_set, segmentation)
    item = read_dataset("coco", tmp_path).images[0]
    np.testing.assert_array_equal(item.instance_map, instance_map)
    assert item.classes == classes


def test_write_seed_types(tmp_path):
    path = write_seed_types(tmp_path / "t.npy", {3: 1, 1: 0, 2: -1})
    table = np.load(path)
    assert table.dtype == np.int32 and table.tolist() == [[1, 0], [3, 1]]


def _canonical(instance_map, classes):
    """Renumber instances by first pixel in raster order, so maps that differ only in ids compare equal."""
    ids, first = np.unique(instance_map.ravel(), return_index=True)
    ids, first = ids[ids > 0], first[ids > 0]
    ordered = ids[np.argsort(first)]
    lookup = np.zeros(instance_map.max() + 1, np.int32)
    lookup[ordered] = np.arange(1, ordered.size + 1)
    return lookup[instance_map], {int(lookup[i]): c for i, c in classes.items()}


@pytest.mark.parametrize("format", FORMATS)
def test_every_format_round_trips_a_dataset(tmp_path, format):
    original = generate_nucleus_dataset(n_images=2, nuclei_per_image=15, seed=11, size=(64, 80),
                                        unlabelled_fraction=0.0 if format == "pannuke" else 0.2)
    write_dataset(original, format, tmp_path / format)
    back = read_dataset(format, tmp_path / format, class_names=list(original.label_set.classes))
    assert len(back.images) == len(original.images)
    for a, b in zip(original.images, back.images):
        np.testing.assert_array_equal(a.image, b.image)
        if format == "geojson":  # polygons: same nuclei and classes, outlines close
            matches = _match(a.instance_map, b.instance_map, a.classes, b.classes)
            assert all(kept for _, kept in matches.values()) and min(i for i, _ in matches.values()) > 0.8
        elif format == "pannuke":  # PanNuke renumbers instances channel by channel
            (a_map, a_classes), (b_map, b_classes) = _canonical(a.instance_map, a.classes), _canonical(
                b.instance_map, b.classes)
            np.testing.assert_array_equal(a_map, b_map)
            assert a_classes == b_classes
        else:
            np.testing.assert_array_equal(a.instance_map, b.instance_map)
            assert a.classes == b.classes


def test_nucleus_geometry_matches_a_direct_computation():
    instance_map = np.zeros((20, 30), np.int32)
    instance_map[2:5, 3:9] = 1
    instance_map[10:20, 25:30] = 4
    instance_map[0, 29] = 4  # non-convex: a far pixel widens the box and moves the centroid
    geometry = nucleus_geometry(instance_map)
    assert geometry["id"].tolist() == [1, 4]
    for row in geometry:
        ys, xs = np.nonzero(instance_map == row["id"])
        assert (row["x0"], row["y0"], row["x1"], row["y1"]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert row["area"] == xs.size
        assert row["cx"] == pytest.approx(xs.mean()) and row["cy"] == pytest.approx(ys.mean())
    assert nucleus_geometry(np.zeros((5, 5), np.int32)).size == 0


def test_nucleus_outlines_are_simplified_outer_polygons(tile):
    _, instance_map, _, _ = tile
    exact = nucleus_outlines(instance_map, epsilon=0)
    simple = nucleus_outlines(instance_map, epsilon=1.5)
    assert set(exact) == set(simple) == set(np.unique(instance_map)[1:].tolist())
    for instance_id, outline in exact.items():
        mask = np.zeros(instance_map.shape, np.uint8)
        cv2.fillPoly(mask, [np.array(outline, np.int32)], 1)
        original = instance_map == instance_id
        assert (mask.astype(bool) & original).sum() / (mask.astype(bool) | original).sum() > 0.9
        assert len(simple[instance_id]) <= len(outline)
        xs, ys = np.array(outline).T
        rows, cols = np.nonzero(original)
        assert xs.min() == cols.min() and xs.max() == cols.max() and ys.min() == rows.min() and ys.max() == rows.max()


def test_geometry_and_outlines_cover_every_nucleus_of_a_large_map():
    # Their speed is measured in benchmarks/ (no timed assertions here); this checks nothing is lost at scale.
    _, instance_map, _ = generate_tile(np.random.default_rng(0), (2000, 2000), 3000, 4)
    assert instance_map.max() >= 2900
    geometry = nucleus_geometry(instance_map)
    outlines = nucleus_outlines(instance_map)
    assert len(geometry) == len(outlines) == instance_map.max()
