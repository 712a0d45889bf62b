"""Test and benchmark slides stitched from the real CoNSeP tiles: the slide, its GeoJSON and its mask agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlcore.cli import main
from mlcore.readers import open_dataset
from mlcore.slide_fixtures import build_benchmark_slide, build_test_slide
from mlcore.slide_nuclei import geojson_class_names, iter_geojson_nuclei, iter_mask_nuclei
from mlcore.slides import open_slide


@pytest.fixture(scope="module")
def fixture_slide(shared_data, tmp_path_factory):
    return build_test_slide(shared_data, tmp_path_factory.mktemp("slide"))


def _key(nucleus):
    return nucleus.bbox, nucleus.area


def test_fixture_slide_holds_the_real_tiles(fixture_slide, shared_data):
    manifest = json.loads(fixture_slide["manifest"].read_text())
    assert (manifest["width"], manifest["height"]) == (1024, 768) and len(manifest["tiles"]) == 12
    reader = open_dataset("hovernet", shared_data / "consep")
    by_name = {reader.read(i).name: i for i in range(len(reader))}
    with open_slide(fixture_slide["slide"], "fixture.tif") as slide:
        assert slide.info.mpp == pytest.approx(0.25) and slide.info.level_count == 2
        assert slide.info.level_dimensions == ((1024, 768), (512, 384))
        for tile in manifest["tiles"][:3]:
            source = reader.read(by_name[tile["name"]]).image
            region = slide.read_region(0, tile["x"], tile["y"], tile["width"], tile["height"])
            assert np.array_equal(region, source)  # lossless (zlib) tiles


def test_geojson_and_mask_describe_the_same_nuclei(fixture_slide):
    manifest = json.loads(fixture_slide["manifest"].read_text())
    from_geojson = list(iter_geojson_nuclei(fixture_slide["geojson"]))
    from_mask = list(iter_mask_nuclei(fixture_slide["mask"]))
    assert len(from_geojson) == len(from_mask) == manifest["nuclei"] == sum(t["nuclei"] for t in manifest["tiles"])
    assert manifest["nuclei"] > 400
    # Outlines with every corner rasterise back to the mask's pixels: the same nuclei exactly, classes aside.
    for polygon_nucleus, mask_nucleus in zip(sorted(from_geojson, key=_key), sorted(from_mask, key=_key)):
        assert (polygon_nucleus.bbox, polygon_nucleus.area, polygon_nucleus.centroid) == \
               (mask_nucleus.bbox, mask_nucleus.area, mask_nucleus.centroid)
        assert np.array_equal(polygon_nucleus.outline, mask_nucleus.outline)
    classes = manifest["label_set"]["classes"]
    assert set(geojson_class_names(fixture_slide["geojson"])) <= set(classes)
    assert sum(n.class_name is not None for n in from_geojson) > 0.9 * len(from_geojson)


def test_svs_and_20x_copies(shared_data, tmp_path):
    paths = build_test_slide(shared_data, tmp_path / "svs", svs=True, grid=(2, 2))
    with open_slide(paths["slide"], "fixture.svs") as slide:
        assert slide.info.vendor == "aperio" and slide.info.mpp == pytest.approx(0.25)
    half = build_test_slide(shared_data, tmp_path / "20x", grid=(2, 2), downsample=2)
    with open_slide(half["slide"]) as slide:
        assert slide.info.mpp == pytest.approx(0.5) and (slide.info.width, slide.info.height) == (256, 256)
    manifest = json.loads(half["manifest"].read_text())
    assert len(list(iter_geojson_nuclei(half["geojson"]))) == manifest["nuclei"] > 50


def test_benchmark_slide_is_written_in_pieces(shared_data, tmp_path):
    steps = []
    paths = build_benchmark_slide(tmp_path, 3000, shared_data=shared_data, pool_size=6,
                                  progress=lambda what, done, total: steps.append(what))
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["nuclei"] >= 3000
    assert sum(1 for _ in iter_geojson_nuclei(paths["geojson"])) == manifest["nuclei"]
    assert sum(1 for _ in iter_mask_nuclei(paths["mask"])) == manifest["nuclei"]
    assert {"slide", "geojson", "mask"} <= set(steps)
    with open_slide(paths["slide"]) as slide:
        assert (slide.info.width, slide.info.height) == (manifest["width"], manifest["height"])
        assert slide.info.level_count >= 2
        # The coarsest level is the mosaic reduced: no white hole where the tiles are.
        level = slide.info.level_count - 1
        width, height = slide.info.level_dimensions[level]
        overview = slide.read_region(level, 0, 0, width, height)
        assert overview.mean() < 240


def test_make_slide_command(shared_data, tmp_path, capsys):
    assert main(["make-slide", "--shared-data", str(shared_data), "--out", str(tmp_path / "small"), "--svs"]) == 0
    assert (tmp_path / "small" / "fixture.svs").is_file()
    assert "nuclei on a 1024 x 768 slide" in capsys.readouterr().err
    assert main(["make-slide", "--shared-data", str(shared_data), "--out", str(tmp_path / "big"),
                 "--nuclei", "1500", "--mpp", "0.5"]) == 0
    manifest = json.loads((tmp_path / "big" / "benchmark_manifest.json").read_text())
    assert manifest["nuclei"] >= 1500 and manifest["mpp"] == 0.5


def test_a_slide_without_a_pyramid_is_refused_with_a_way_out(tmp_path, monkeypatch):
    """Its one huge level is what a preview and the viewer's zoomed-out tiles read whole: an import ran out of
    memory on one of 100,000 x 100,000. (The limit is lowered here so that a small file shows it.)"""
    from mlcore import slides
    from mlcore.slides import SlideError, write_pyramidal_tiff

    flat = write_pyramidal_tiff(tmp_path / "flat.tif", np.full((1024, 768, 3), 200, np.uint8),
                                min_level_size=4096)   # one level only
    pyramid = write_pyramidal_tiff(tmp_path / "pyramid.tif", np.full((1024, 768, 3), 200, np.uint8))
    monkeypatch.setattr(slides, "MAX_LOWEST_LEVEL_PIXELS", 512 * 512)
    with pytest.raises(SlideError, match=r"^scan\.tif: its most reduced level is 768 x 1,024 pixels \(1 level\); "
                                         r"a slide needs a pyramid .*\(vips tiffsave"):
        open_slide(flat, "scan.tif")
    with open_slide(pyramid) as slide:   # 768 x 1024, 384 x 512: its smallest level is within the limit
        assert slide.info.level_count == 2 and slide.thumbnail(64).shape[2] == 3


def test_a_damaged_tile_is_a_slide_error_naming_the_slide(tmp_path):
    """A job shows a SlideError as it is: a damaged file's tile is named, not OpenSlide's exception and line."""
    from mlcore.slides import SlideError, write_pyramidal_tiff

    noise = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    path = write_pyramidal_tiff(tmp_path / "server-side.tif", noise)
    data = bytearray(path.read_bytes())
    data[len(data) // 4: len(data) // 4 + 5000] = b"\xff" * 5000   # inside level 0's tiles
    path.write_bytes(data)
    with open_slide(path, "case 7.tif") as slide, pytest.raises(SlideError) as caught:
        for y in range(0, 1024, 256):
            for x in range(0, 1024, 256):
                slide.read_region(0, x, y, 256, 256)
    message = str(caught.value)
    assert message.startswith("case 7.tif: the region at (") and "the file may be damaged (OpenSlide: " in message
    assert "server-side" not in message and str(tmp_path) not in message
