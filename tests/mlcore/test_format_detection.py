"""Telling a dataset's format from its layout, the upload examples, and detections from stored outlines."""

import io
import json
import zipfile

import pytest

from mlcore.examples import LAYOUTS, example_zip_bytes
from mlcore.readers import FORMATS, detect_format, read_dataset
from mlcore.synthetic import generate_dataset
from mlcore.types import DataError
from mlcore.writers import feature_collection_text, outline_feature


@pytest.mark.parametrize("format", FORMATS)
def test_each_written_format_is_detected(tmp_path, format):
    root = generate_dataset(tmp_path / format, format, n_images=1, nuclei_per_image=3, size=(32, 32))
    assert detect_format(root) == format


@pytest.mark.parametrize("folder, format", [("nucls", "seed"), ("consep", "hovernet"), ("pannuke", "coco"),
                                            ("pannuke_breast_binary", "coco")])
def test_real_samples_are_detected(shared_data, folder, format):
    assert detect_format(shared_data / folder) == format


def test_geojson_beside_images_in_a_folder_is_detected(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    (tmp_path / "images" / "a.geojson").write_text("[]")
    assert detect_format(tmp_path) == "geojson"


def test_no_format_or_two_formats_ask_the_user_to_choose(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing")
    with pytest.raises(DataError, match="could not be told from the files.*choose the format"):
        detect_format(tmp_path)
    (tmp_path / "annotations.json").write_text("{}")
    (tmp_path / "images.npy").write_bytes(b"")
    (tmp_path / "masks.npy").write_bytes(b"")
    with pytest.raises(DataError, match=r"more than one format \(coco, pannuke\)"):
        detect_format(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        detect_format(tmp_path / "readme.txt")


@pytest.mark.parametrize("format", FORMATS)
def test_example_archive_reads_back_in_its_format_and_matches_its_layout(tmp_path, format):
    with zipfile.ZipFile(io.BytesIO(example_zip_bytes(format))) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path)
    root = tmp_path / f"example-{format}"
    assert detect_format(root) == format
    dataset = read_dataset(format, root)
    assert len(dataset.images) == 2 and all(len(image.classes) == 6 for image in dataset.images)
    # Every file the layout names for the first image is in the archive.
    for line in LAYOUTS[format].splitlines()[1:]:
        path = line.split("── ")[1].split()[0]
        assert f"example-{format}/{path}" in names, (path, names)


def test_outline_feature_is_a_closed_ring_in_pixel_edge_coordinates():
    feature = outline_feature([[3, 4], [9, 4], [9, 8]], "detection", ("tumour", (230, 25, 75)),
                              {"Prediction probability": 0.75, "Branch disagreement": None}, image="a")
    ring, = feature["geometry"]["coordinates"]
    assert ring == [[3.5, 4.5], [9.5, 4.5], [9.5, 8.5], [3.5, 4.5]]
    assert feature["properties"] == {"objectType": "detection",
                                     "classification": {"name": "tumour", "color": [230, 25, 75]},
                                     "measurements": {"Prediction probability": 0.75}, "image": "a"}
    tiny, = outline_feature([[1, 1]])["geometry"]["coordinates"]
    assert len(tiny) == 4 and tiny[0] == tiny[-1]  # GeoJSON wants four positions at least
    assert "classification" not in outline_feature([[1, 1]])["properties"]
    # With the nucleus's pixel box, an outline of no area (a point, a line: a nucleus one pixel wide, often cut
    # by the tile's edge) is written as that box, which GeoJSON readers take (shapely: "Too few points").
    point, = outline_feature([[1, 1]], box=(1, 1, 2, 2))["geometry"]["coordinates"]
    assert point == [[1, 1], [2, 1], [2, 2], [1, 2], [1, 1]]
    line, = outline_feature([[3, 4], [7, 4]], box=(3, 4, 8, 5))["geometry"]["coordinates"]
    assert line == [[3, 4], [8, 4], [8, 5], [3, 5], [3, 4]]
    kept, = outline_feature([[3, 4], [9, 4], [9, 8]], box=(3, 4, 10, 9))["geometry"]["coordinates"]
    assert kept == ring   # an outline with an area stays as it is


def test_feature_collection_text_is_one_json_document():
    features = [outline_feature([[0, 0], [2, 0], [2, 2]]), outline_feature([[5, 5], [6, 5], [6, 6]])]
    assert json.loads("".join(feature_collection_text(features))) == {"type": "FeatureCollection",
                                                                      "features": features}
    assert json.loads("".join(feature_collection_text([]))) == {"type": "FeatureCollection", "features": []}
