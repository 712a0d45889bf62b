"""A slide's nuclei streamed from QuPath GeoJSON and from an instance-mask TIFF, and written back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mlcore import limits, slide_nuclei
from mlcore.slide_nuclei import (SlideNucleiError, SlideNucleus, geojson_class_names, iter_geojson_nuclei,
                                 iter_mask_nuclei, nuclei_from_instance_map, simplify_outline,
                                 write_geojson_nuclei, write_label_tiff)
from mlcore.synthetic import generate_tile


def _square(x: float, y: float, side: float) -> list:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]


def _feature(geometry: dict, **properties) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _polygon(ring: list) -> dict:
    return {"type": "Polygon", "coordinates": [ring]}


def _synthetic_nuclei(seed: int = 0, n: int = 60) -> list[SlideNucleus]:
    _, instance_map, _ = generate_tile(np.random.default_rng(seed), (256, 256), n)
    return [nucleus for _, nucleus in nuclei_from_instance_map(instance_map, 1000, 2000)]


def _key(nucleus: SlideNucleus):
    return nucleus.bbox, nucleus.area


# ------------------------------------------------------------------------------------------------ GeoJSON

def test_qupath_forms(tmp_path):
    features = [
        _feature(_polygon(_square(10, 10, 20)), objectType="detection",
                 classification={"name": "Tumor", "colorRGB": -65536},
                 measurements=[{"name": "Nucleus: Area", "value": 400.0}, {"name": "broken", "value": None}]),
        # A cell: its nucleus, not its cell boundary.
        {**_feature(_polygon(_square(100, 100, 60)), objectType="cell", classification="Immune cells"),
         "nucleusGeometry": _polygon(_square(110, 110, 10))},
        # A MultiPolygon: its largest polygon.
        _feature({"type": "MultiPolygon", "coordinates": [[_square(300, 300, 2)], [_square(400, 400, 12)]]},
                 classification={"names": ["Tumor", "Positive"], "color": [1, 2, 3]},
                 measurements={"Circularity": 0.5, "text": "no"}),
        # A tissue annotation exported with the detections: not a nucleus.
        _feature(_polygon(_square(0, 0, 5000)), objectType="annotation", classification={"name": "Region"}),
        _feature(_polygon(_square(50, 60, 4))),  # unclassified
    ]
    bare = tmp_path / "bare.geojson"
    bare.write_text(json.dumps(features))
    collection = tmp_path / "collection.geojson"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    nuclei = list(iter_geojson_nuclei(bare))
    assert nuclei == list(iter_geojson_nuclei(collection))
    assert [n.class_name for n in nuclei] == ["Tumor", "Immune cells", "Tumor: Positive", None]
    # The square from 10 to 30 in pixel-edge coordinates, rasterised as the tile GeoJSON reader does (polygon_mask:
    # the pixels whose centres it holds), is pixels 10..29, QuPath's own area of 400; the outline runs through
    # the centres of its corner pixels.
    assert nuclei[0].bbox == (10, 10, 30, 30) and nuclei[0].area == 400 == nuclei[0].measurements["Nucleus: Area"]
    assert nuclei[0].centroid == (19.5, 19.5)
    assert nuclei[0].outline.tolist() == [[10, 10], [29, 10], [29, 29], [10, 29]]
    assert nuclei[0].measurements == {"Nucleus: Area": 400.0}
    assert nuclei[1].bbox == (110, 110, 120, 120)
    assert nuclei[2].bbox == (400, 400, 412, 412) and nuclei[2].measurements == {"Circularity": 0.5}
    assert nuclei[3].area == 16
    assert geojson_class_names(bare) == ["Tumor", "Immune cells", "Tumor: Positive"]
    single = tmp_path / "single.geojson"
    single.write_text(json.dumps(features[0]))
    assert list(iter_geojson_nuclei(single)) == nuclei[:1]


def test_write_then_read_gives_the_same_nuclei(tmp_path):
    nuclei = _synthetic_nuclei()
    classes = ["tumour", None, "lymphocyte"]
    rows = [(SlideNucleus(n.outline, n.bbox, n.centroid, n.area, None, {"index": float(i)}),
             classes[i % 3], (200, 0, 0) if classes[i % 3] else None) for i, n in enumerate(nuclei)]
    first = tmp_path / "first.geojson"
    assert write_geojson_nuclei(first, iter(rows)) == len(nuclei)
    read = list(iter_geojson_nuclei(first))
    assert len(read) == len(nuclei)
    for (written, class_name, _), back in zip(rows, read):
        assert np.array_equal(back.outline, written.outline)  # the simplification is idempotent
        assert back.class_name == class_name and back.measurements == written.measurements
        # The outline's pixels: within a pixel of the mask's own box.
        assert np.abs(np.subtract(back.bbox, written.bbox)).max() <= 1
    second = tmp_path / "second.geojson"
    write_geojson_nuclei(second, ((n, n.class_name, (0, 0, 200)) for n in read))
    assert list(iter_geojson_nuclei(second)) == read
    content = json.loads(second.read_text())
    feature = next(f for f in content["features"] if "classification" in f["properties"])
    assert feature["properties"]["objectType"] == "detection"
    assert feature["properties"]["classification"]["color"] == [0, 0, 200]
    assert feature["properties"]["classification"]["colorRGB"] & 0xFFFFFF == 200
    assert geojson_class_names(second) == ["tumour", "lymphocyte"]


def test_polygons_with_every_corner_rasterise_to_the_mask(tmp_path):
    """A GeoJSON whose outlines keep every corner reads back with the mask's pixels exactly."""
    _, instance_map, _ = generate_tile(np.random.default_rng(3), (256, 256), 80)
    full = [n for _, n in nuclei_from_instance_map(instance_map, epsilon=0)]
    path = tmp_path / "full.geojson"
    write_geojson_nuclei(path, ((n, None, None) for n in full))
    from_mask = sorted((n for _, n in nuclei_from_instance_map(instance_map)), key=_key)
    from_geojson = sorted(iter_geojson_nuclei(path), key=_key)
    matching = sum(a == b for a, b in zip(from_mask, from_geojson))
    assert len(from_geojson) == len(from_mask) and matching >= 0.95 * len(from_mask)


def test_simplification_is_idempotent():
    _, instance_map, _ = generate_tile(np.random.default_rng(5), (256, 256), 80)
    for _, nucleus in nuclei_from_instance_map(instance_map, epsilon=0):
        once = simplify_outline(nucleus.outline)
        assert np.array_equal(simplify_outline(once), once)
        assert len(once) <= max(len(nucleus.outline), 1)


@pytest.mark.parametrize("content, problem", [
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point", '
     '"coordinates": [1, 2]}}]}', "feature #0: geometry type 'Point' is not supported"),
    ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [0, 4]]]}}, '
     '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[1, 2, 3]]}}]', "feature #1: malformed Polygon"),
    ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [0, 4]]]}}, {"type":',
     "not valid JSON after feature #0"),
    ('{"images": [], "annotations": []}', "not GeoJSON features"),
    ('[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5000, 0], [0, 5000]]]}}]',
     "feature #0: a polygon of 5000 x 5000 pixels is no nucleus"),
    ('[{"type": "Feature", "properties": {"classification": 7}, "geometry": {"type": "Polygon", '
     '"coordinates": [[[0, 0], [4, 0], [0, 4]]]}}]', "feature #0: classification must be a name"),
    ("not json at all", "not GeoJSON"),
])
def test_errors_name_the_users_file_and_the_feature(tmp_path, content, problem):
    path = tmp_path / "server-side-name.geojson"
    path.write_text(content)
    with pytest.raises(SlideNucleiError) as caught:
        list(iter_geojson_nuclei(path, "my slide.geojson"))
    message = str(caught.value)
    assert message.startswith("my slide.geojson: ") and problem in message
    assert str(tmp_path) not in message and "server-side-name" not in message
    assert isinstance(caught.value, ValueError)



def test_class_names_are_checked_where_the_feature_is_known_and_blank_ones_are_no_class(tmp_path):
    triangle = _polygon([[0, 0], [4, 0], [0, 4], [0, 0]])
    path = tmp_path / "cells.geojson"
    path.write_text(json.dumps([_feature(triangle, classification={"name": "Tumor"}),
                                _feature(triangle, classification={"name": "  "}),
                                _feature(triangle, classification="")]))
    assert geojson_class_names(path, "cells.geojson") == ["Tumor"]
    assert [n.class_name for n in iter_geojson_nuclei(path, "cells.geojson")] == ["Tumor", None, None]
    path.write_text(json.dumps([_feature(triangle, classification={"name": "Tumor"}),
                                _feature(triangle, classification={"name": "x" * 300})]))
    with pytest.raises(SlideNucleiError, match=r"^cells\.geojson: feature #1: class name 'x{80}' is 300 "
                                               r"characters long, over the limit of 100"):
        geojson_class_names(path, "cells.geojson")

def test_limits(tmp_path, monkeypatch):
    features = [_feature(_polygon(_square(10 * i, 0, 5))) for i in range(5)]
    path = tmp_path / "five.geojson"
    path.write_text(json.dumps(features))
    monkeypatch.setattr(limits, "MAX_SLIDE_NUCLEI", 4)
    with pytest.raises(SlideNucleiError, match="over MAX_SLIDE_NUCLEI"):
        list(iter_geojson_nuclei(path, "five.geojson"))
    monkeypatch.setattr(limits, "MAX_SLIDE_NUCLEI", 10)
    monkeypatch.setattr(limits, "MAX_POLYGON_VERTICES", 4)
    with pytest.raises(SlideNucleiError, match=r"feature #0: over MAX_POLYGON_VERTICES \(4\)"):
        list(iter_geojson_nuclei(path, "five.geojson"))
    monkeypatch.setattr(limits, "MAX_POLYGON_VERTICES", 100)
    # One feature of 1 MB: refused while it is parsed, not after.
    huge = [features[0], _feature(_polygon(_square(0, 0, 5)), note="x" * 1_000_000)]
    path.write_text(json.dumps(huge))
    monkeypatch.setattr(limits, "MAX_FEATURE_BYTES", 200_000)
    with pytest.raises(SlideNucleiError, match=r"feature #1: over MAX_FEATURE_BYTES"):
        list(iter_geojson_nuclei(path, "five.geojson"))
    with pytest.raises(SlideNucleiError, match="^gone.geojson: no such file"):
        list(iter_geojson_nuclei(tmp_path / "missing.geojson", "gone.geojson"))


# --------------------------------------------------------------------------------------------- mask TIFF

def test_mask_tiff_nuclei_cut_by_strip_borders_come_back_whole(tmp_path, monkeypatch):
    """Strips of one 64-pixel tile row: every nucleus crossing a border, and one spanning three strips,
    comes back as the in-memory map gives it."""
    _, tile_map, _ = generate_tile(np.random.default_rng(1), (320, 288), 120)
    labels = tile_map.astype(np.uint32)
    tall = int(labels.max()) + 1
    labels[50:200, 270:276] = tall  # crosses the borders at rows 64, 128 and 192
    path = write_label_tiff(tmp_path / "mask.tif", labels, tile=64)
    monkeypatch.setattr(slide_nuclei, "_STRIP_PIXELS", 64 * 288)
    read = list(iter_mask_nuclei(path))
    expected = [n for _, n in nuclei_from_instance_map(labels)]
    assert sorted(read, key=_key) == sorted(expected, key=_key)
    crossing = [n for n in read if n.bbox[1] // 64 != (n.bbox[3] - 1) // 64]
    assert len(crossing) >= 10
    tall_nucleus = next(n for n in read if n.bbox == (270, 50, 276, 200))
    assert tall_nucleus.area == 150 * 6


def test_mask_tiff_from_tiles_and_its_errors(tmp_path, monkeypatch):
    labels = np.zeros((128, 192), np.uint32)
    cv2.circle(labels, (64, 64), 10, 7, -1)
    cv2.circle(labels, (150, 100), 6, 4_000_000_000, -1)  # a large id: nothing is sized by it
    tiles = (labels[y:y + 64, x:x + 64] for y in range(0, 128, 64) for x in range(0, 192, 64))
    path = write_label_tiff(tmp_path / "tiles.tif", tiles, shape=labels.shape, tile=64)
    read = sorted(iter_mask_nuclei(path), key=_key)
    assert [n.centroid for n in read] == [(64.0, 64.0), (150.0, 100.0)]
    rgb = tmp_path / "rgb.tif"
    cv2.imwrite(str(rgb), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SlideNucleiError, match="^my mask.tif: an instance mask must be one channel"):
        list(iter_mask_nuclei(rgb, "my mask.tif"))
    text = tmp_path / "text.tif"
    text.write_text("hello")
    with pytest.raises(SlideNucleiError, match="^my mask.tif: not a TIFF file") as caught:
        list(iter_mask_nuclei(text, "my mask.tif"))
    assert str(tmp_path) not in str(caught.value)
    monkeypatch.setattr(limits, "MAX_NUCLEUS_EXTENT", 15)
    with pytest.raises(SlideNucleiError, match="instance 7 spans 21 x 21 pixels"):
        list(iter_mask_nuclei(path, "my mask.tif"))
