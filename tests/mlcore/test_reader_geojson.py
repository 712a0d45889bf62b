import json

import numpy as np

from mlcore.readers import read_dataset
from mlcore.writers import save_rgb


def _ring(x0, y0, x1, y1):
    """Closed ring through the centres of the corner pixels of x0..x1-1, y0..y1-1 (pixel-edge coordinates)."""
    return [[x0 + .5, y0 + .5], [x1 - .5, y0 + .5], [x1 - .5, y1 - .5], [x0 + .5, y1 - .5], [x0 + .5, y0 + .5]]


def _feature(geometry, name=None, color=None, key="classification"):
    properties = {"objectType": "detection"}
    if name is not None:
        properties[key] = {"name": name, **({"color": color} if color is not None else {})}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _write(root, stem, features, as_list=False, size=(30, 30)):
    save_rgb(root / f"{stem}.png", np.full((*size, 3), 230, np.uint8))
    content = features if as_list else {"type": "FeatureCollection", "features": features}
    (root / f"{stem}.geojson").write_text(json.dumps(content))


def test_polygons_multipolygons_holes_and_classes(tmp_path):
    # The hole along pixel edges, as QuPath writes one: a ring through its pixels' centres would keep them.
    hole = [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
    square_with_hole = {"type": "Polygon", "coordinates": [_ring(0, 0, 10, 10), hole]}
    two_pieces = {"type": "MultiPolygon", "coordinates": [[_ring(20, 0, 23, 3)], [_ring(25, 0, 28, 3)]]}
    unclassified = {"type": "Polygon", "coordinates": [_ring(0, 20, 5, 25)]}
    _write(tmp_path, "a", [_feature(square_with_hole, "Tumor", [200, 0, 0]),
                           _feature(two_pieces, "Immune cells", -16776961),  # QuPath packed ARGB: blue
                           _feature(unclassified)])
    dataset = read_dataset("geojson", tmp_path)
    assert dataset.label_set.classes == ("Immune cells", "Tumor")  # sorted
    assert dataset.label_set.colors == ((0, 0, 255), (200, 0, 0))
    item = dataset.images[0]
    expected = np.zeros((30, 30), np.int32)
    expected[0:10, 0:10] = 1
    expected[4:6, 4:6] = 0
    expected[0:3, 20:23] = 2
    expected[0:3, 25:28] = 2
    expected[20:25, 0:5] = 3
    np.testing.assert_array_equal(item.instance_map, expected)
    assert item.classes == {1: 1, 2: 0}


def test_bare_feature_list_and_class_names_argument(tmp_path):
    _write(tmp_path, "old", [_feature({"type": "Polygon", "coordinates": [_ring(2, 2, 6, 6)]}, "B")], as_list=True)
    dataset = read_dataset("geojson", tmp_path, class_names=["A", "B", "C"])
    assert dataset.label_set.classes == ("A", "B", "C")
    assert dataset.images[0].classes == {1: 1}
    assert dataset.images[0].instance_map.sum() == 16


def test_qupath_cells_use_the_nucleus_geometry(tmp_path):
    cell = _feature({"type": "Polygon", "coordinates": [_ring(0, 0, 20, 20)]}, "T")
    cell["nucleusGeometry"] = {"type": "Polygon", "coordinates": [_ring(5, 5, 9, 9)]}
    _write(tmp_path, "c", [cell])
    item = read_dataset("geojson", tmp_path).images[0]
    assert item.instance_map.sum() == 16 and item.instance_map[5:9, 5:9].all()


def test_images_in_an_images_folder_and_pixel_edge_outlines(tmp_path):
    (tmp_path / "images").mkdir()
    save_rgb(tmp_path / "images" / "x.png", np.zeros((20, 20, 3), np.uint8))
    # QuPath traces pixel edges: pixels 5..9 x 5..9 are the square [5, 10] x [5, 10].
    edge_square = [[5, 5], [10, 5], [10, 10], [5, 10], [5, 5]]
    (tmp_path / "x.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [_feature({"type": "Polygon", "coordinates": [edge_square]}, "N")]}))
    mask = read_dataset("geojson", tmp_path).images[0].instance_map > 0
    # cv2.fillPoly keeps the pixels an outline runs through, so an edge-traced outline gains at most a
    # one-pixel rim on its right and bottom sides.
    assert mask[5:10, 5:10].all()
    assert mask.sum() <= 36 and not mask[:5].any() and not mask[:, :5].any()


def test_unlabelled_read(tmp_path):
    _write(tmp_path, "u", [_feature({"type": "Polygon", "coordinates": [_ring(2, 2, 6, 6)]}, "X")])
    dataset = read_dataset("geojson", tmp_path, labelled=False)
    assert dataset.label_set is None and dataset.images[0].classes == {}


def test_qupath_derived_classes_and_an_all_objects_export(tmp_path):
    """QuPath 0.4+ writes a derived class as "names" (the import failed: "classification must have a name"),
    0.2/0.3 as a "parentClass" chain ("Tumor: Positive" and "Stroma: Positive" both became "Positive"); an
    "export all objects" file carries the tissue annotation the detections lie in (it became a nucleus of
    class "Region*" that the detections painted over)."""
    region = _feature({"type": "Polygon", "coordinates": [[[0, 0], [30, 0], [30, 30], [0, 30], [0, 0]]]}, "Region*")
    region["properties"]["objectType"] = "annotation"
    features = [
        region,
        _feature({"type": "Polygon", "coordinates": [_ring(2, 2, 8, 8)]}, key="classification",
                 name=None),
        _feature({"type": "Polygon", "coordinates": [_ring(10, 2, 16, 8)]}, "Positive"),
        _feature({"type": "Polygon", "coordinates": [_ring(20, 2, 26, 8)]}, "Positive"),
    ]
    features[1]["properties"]["classification"] = {"names": ["Tumor", "Positive"], "color": [200, 0, 0]}
    features[2]["properties"]["classification"]["parentClass"] = {"name": "Tumor"}
    features[3]["properties"]["classification"]["parentClass"] = {"name": "Stroma", "colorRGB": -16776961}
    _write(tmp_path, "t", features)
    dataset = read_dataset("geojson", tmp_path)
    assert dataset.label_set.classes == ("Stroma: Positive", "Tumor: Positive")
    item = dataset.images[0]
    assert item.instance_map.max() == 3 and (item.instance_map > 0).sum() == 3 * 36   # no 30 x 30 region
    assert sorted(item.classes.values()) == [0, 1, 1]


def test_features_that_keep_no_pixel_are_counted_by_reason(tmp_path):
    """Features are numbered in file order and the later one wins where they overlap: one wholly covered by later
    ones, one wholly outside the image and one with an empty outline keep no pixel. They are left out, as
    before, but counted per image (a curator who imported 4,000 detections and got 3,950 nuclei could not tell
    why)."""
    polygon = lambda *box: {"type": "Polygon", "coordinates": [_ring(*box)]}   # noqa: E731
    _write(tmp_path, "a", [
        _feature(polygon(2, 2, 5, 5), "T"),                                        # covered by the next one
        _feature(polygon(0, 0, 8, 8), "T"),
        _feature(polygon(40, 40, 46, 46), "T"),                                    # right of and below the image
        _feature({"type": "MultiPolygon", "coordinates": [[_ring(-9, 3, -2, 9)], [_ring(3, -9, 9, -2)]]}, "T"),
        _feature({"type": "Polygon", "coordinates": []}, "T"),                     # an empty outline
        _feature(polygon(20, 20, 25, 25), "T"),
    ])
    _write(tmp_path, "b", [_feature(polygon(2, 2, 5, 5), "T")])
    a, b = read_dataset("geojson", tmp_path).images
    assert a.instance_map.max() == 2 and a.classes == {1: 0, 2: 0}
    assert a.left_out == {"covered": 1, "outside": 2, "empty": 1}
    assert b.left_out == {}


def test_a_feature_covered_only_in_part_is_kept_and_not_counted(tmp_path):
    _write(tmp_path, "a", [_feature({"type": "Polygon", "coordinates": [_ring(0, 0, 6, 6)]}, "T"),
                           _feature({"type": "Polygon", "coordinates": [_ring(0, 0, 6, 5)]}, "T"),
                           # across the image's left edge: its pixels inside are kept
                           _feature({"type": "Polygon", "coordinates": [_ring(-5, 20, 3, 24)]}, "T")])
    item = read_dataset("geojson", tmp_path).images[0]
    assert item.instance_map.max() == 3 and (item.instance_map == 1).sum() == 6
    assert item.left_out == {}
