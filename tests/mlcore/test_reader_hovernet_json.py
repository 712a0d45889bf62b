"""HoVer-Net's inference output as a dataset: ``json/<stem>.json`` (contours and types) or ``mat/<stem>.mat``
beside the tiles as ``Images/``, so that a lab reviews and corrects what HoVer-Net predicted. The JSON here is
written the way HoVer-Net writes it (``cv2.findContours`` with ``RETR_TREE`` and ``CHAIN_APPROX_SIMPLE`` on each
instance, the first contour, outlines of fewer than 3 points left out), and must read back to HoVer-Net's own
instance map."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from mlcore.readers import detect_format, read_dataset
from mlcore.readers.hovernet import load_mat
from mlcore.types import DataError
from mlcore.writers import save_rgb


def hovernet_json(instance_map: np.ndarray, types: dict[int, int | None]) -> dict:
    """What HoVer-Net's run_infer.py writes for one tile (its process_instance and __save_json)."""
    nuclei = {}
    for instance_id in np.unique(instance_map[instance_map > 0]):
        rows, cols = np.nonzero(instance_map == instance_id)
        r0, r1, c0, c1 = max(rows.min() - 2, 0), rows.max() + 3, max(cols.min() - 2, 0), cols.max() + 3
        crop = (instance_map[r0:r1, c0:c1] == instance_id).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        contour = np.squeeze(contours[0].astype(np.int32))
        if contour.ndim != 2 or contour.shape[0] < 3:
            continue  # HoVer-Net leaves these out ("likely artifact")
        contour = contour + (c0, r0)
        nuclei[str(int(instance_id))] = {
            "bbox": [[int(rows.min()), int(cols.min())], [int(rows.max()) + 1, int(cols.max()) + 1]],
            "centroid": [float(cols.mean()), float(rows.mean())], "contour": contour.tolist(),
            "type_prob": 0.9, "type": types.get(int(instance_id))}
    return {"mag": None, "nuc": nuclei}


def as_written(instance_map: np.ndarray) -> np.ndarray:
    """The instance map without the instances HoVer-Net leaves out of its JSON."""
    kept = [int(key) for key in hovernet_json(instance_map, {})["nuc"]]
    return np.where(np.isin(instance_map, kept), instance_map, 0)


def pixel_sets(instance_map: np.ndarray) -> set[frozenset]:
    flat = instance_map.ravel()
    order = np.argsort(flat, kind="stable")
    ids, starts = np.unique(flat[order], return_index=True)
    pieces = np.split(order, starts[1:])
    return {frozenset(piece.tolist()) for instance_id, piece in zip(ids, pieces) if instance_id}


def tile(root: Path, stem: str, instance_map: np.ndarray, types: dict[int, int | None], folder: str = "json"):
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / folder).mkdir(exist_ok=True)
    save_rgb(root / "Images" / f"{stem}.png", np.full((*instance_map.shape, 3), 200, np.uint8))
    (root / folder / f"{stem}.json").write_text(json.dumps(hovernet_json(instance_map, types)))


TYPE_INFO = {"0": ["nolabel", [0, 0, 0]], "1": ["neoplastic", [255, 0, 0]], "2": ["inflammatory", [0, 255, 0]]}


def shapes() -> np.ndarray:
    """A disc, a concave L, a diagonal bar, a 2 x 12 bar and a 2 x 2 square touching it, and a one-pixel-wide
    line (its contour is two points: HoVer-Net leaves it out)."""
    instance_map = np.zeros((40, 48), np.int32)
    yy, xx = np.mgrid[:40, :48]
    instance_map[(yy - 10) ** 2 + (xx - 10) ** 2 <= 36] = 1
    instance_map[20:34, 4:8] = 2
    instance_map[30:34, 8:16] = 2
    for k in range(10):
        instance_map[5 + k, 25 + k:28 + k] = 3
    instance_map[21:23, 30:42] = 4
    instance_map[23:25, 30:32] = 5   # touches the bar above it
    instance_map[36, 20:40] = 6
    return instance_map


def test_hovernet_json_reads_back_to_its_instance_map_and_types(tmp_path):
    instance_map = shapes()
    tile(tmp_path, "tile_a", instance_map, {1: 1, 2: 2, 3: 0, 4: None, 5: 2})
    (tmp_path / "type_info.json").write_text(json.dumps(TYPE_INFO))
    assert detect_format(tmp_path) == "hovernet"
    dataset = read_dataset("hovernet", tmp_path)
    image, = dataset.images
    assert dataset.label_set.classes == ("neoplastic", "inflammatory")
    assert len(hovernet_json(instance_map, {})["nuc"]) == 5   # the one-pixel line is not in the file
    assert pixel_sets(image.instance_map) == pixel_sets(as_written(instance_map))
    by_pixels = {frozenset(np.flatnonzero(image.instance_map.ravel() == i).tolist()): c
                 for i, c in image.classes.items()}
    expected = {frozenset(np.flatnonzero(instance_map.ravel() == i).tolist()): c for i, c in ((1, 0), (2, 1), (5, 1))}
    assert by_pixels == expected   # type 0 and null: no label
    assert image.group == "tile_a"

    unlabelled = read_dataset("hovernet", tmp_path, labelled=False)
    assert unlabelled.label_set is None and unlabelled.images[0].classes == {}


def test_hovernet_output_folder_as_written_reads_the_mat_where_both_are(tmp_path):
    """HoVer-Net's output folder holds mat/, json/, overlay/ and qupath/; the tiles are added as Images/."""
    instance_map = shapes()
    tile(tmp_path, "tile_a", instance_map, {1: 1, 2: 1, 3: 1, 4: 1, 5: 1})
    (tmp_path / "mat").mkdir()
    scipy.io.savemat(tmp_path / "mat" / "tile_a.mat", {"inst_map": instance_map, "inst_type": np.full((6, 1), 2)})
    tile(tmp_path, "tile_b", instance_map[:, ::-1].copy(), {1: 2, 2: 2, 3: 2, 4: 2, 5: 2})
    (tmp_path / "overlay").mkdir()
    (tmp_path / "qupath").mkdir()
    (tmp_path / "type_info.json").write_text(json.dumps(TYPE_INFO))
    assert detect_format(tmp_path) == "hovernet"
    dataset = read_dataset("hovernet", tmp_path)
    assert [image.name for image in dataset.images] == ["tile_a", "tile_b"]
    # tile_a from its .mat (every type 2), tile_b from its JSON; both the same shapes.
    assert set(dataset.images[0].classes.values()) == {1} and len(dataset.images[0].classes) == 6
    assert pixel_sets(dataset.images[0].instance_map) == pixel_sets(instance_map)
    assert pixel_sets(dataset.images[1].instance_map) == pixel_sets(as_written(instance_map[:, ::-1]))


def test_consep_labels_through_hovernet_json_come_back_pixel_for_pixel(shared_data, tmp_path):
    """The real CoNSeP sample written as HoVer-Net JSON: every nucleus HoVer-Net would write (outlines of 3
    points or more) reads back with its exact pixels but where the instance has holes or several pieces, which a
    contour cannot hold, and with its class."""
    source = shared_data / "consep"
    stems = sorted(path.stem for path in (source / "Labels").glob("*.mat"))[:24]
    expected_sets = set()
    for stem in stems:
        content = load_mat(source / "Labels" / f"{stem}.mat", ("inst_map", "inst_type"))
        instance_map = content["inst_map"].astype(np.int32)
        types = {i + 1: int(t) for i, t in enumerate(content["inst_type"].ravel())}
        (tmp_path / "Images").mkdir(exist_ok=True)
        image_path = next((source / "Images").glob(f"{stem}.*"))
        shutil.copy(image_path, tmp_path / "Images" / image_path.name)
        (tmp_path / "json").mkdir(exist_ok=True)
        written = hovernet_json(instance_map, types)
        (tmp_path / "json" / f"{stem}.json").write_text(json.dumps(written))
        for key in written["nuc"]:
            pixels = frozenset(np.flatnonzero(instance_map.ravel() == int(key)).tolist())
            expected_sets.add((stem, pixels, types[int(key)] - 1))
    shutil.copy(source / "type_info.json", tmp_path / "type_info.json")
    dataset = read_dataset("hovernet", tmp_path)
    read = set()
    for image in dataset.images:
        flat = image.instance_map.ravel()
        for instance_id, class_index in image.classes.items():
            read.add((image.name, frozenset(np.flatnonzero(flat == instance_id).tolist()), class_index))
    total = len(expected_sets)
    exact = len(expected_sets & read)
    assert total > 1000 and len(read) == total
    assert exact / total > 0.99, f"{exact} of {total} nuclei read back exactly"


@pytest.mark.parametrize("content, problem", [
    ({"nuc": {"1": {"contour": [[1, 2], [5, 2], [5, 6]], "type": 7}}}, "nucleus '1': type 7 outside the label set"),
    ({"nuc": {"3": {"contour": [[1, 2, 3]], "type": 1}}}, "nucleus '3': 'contour' must be a list of [x, y] points"),
    ({"nuc": {"3": {"contour": "none", "type": 1}}}, "nucleus '3': 'contour' must be a list of [x, y] points"),
    ({"nuc": {"3": {"contour": [[1, 2], [5, 2], [5, 6]], "type": 1.5}}}, "type 1.5 outside the label set"),
    ({"type": "FeatureCollection", "features": []}, "expected HoVer-Net's JSON"),
])
def test_a_bad_hovernet_json_is_refused_naming_the_file_and_nucleus(tmp_path, content, problem):
    (tmp_path / "Images").mkdir()
    (tmp_path / "json").mkdir()
    save_rgb(tmp_path / "Images" / "t.png", np.zeros((16, 16, 3), np.uint8))
    (tmp_path / "json" / "t.json").write_text(json.dumps(content))
    (tmp_path / "type_info.json").write_text(json.dumps(TYPE_INFO))
    with pytest.raises(DataError, match="t.json") as refused:
        read_dataset("hovernet", tmp_path)
    assert problem in str(refused.value)


def test_tiles_without_hovernet_output_are_named(tmp_path):
    tile(tmp_path, "a", shapes(), {})
    save_rgb(tmp_path / "Images" / "b.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "type_info.json").write_text(json.dumps(TYPE_INFO))
    with pytest.raises(DataError, match=r"b.png.*no Labels/b.mat, mat/b.mat or json/b.json"):
        read_dataset("hovernet", tmp_path)


def test_hovernet_json_nuclei_that_keep_no_pixel_are_counted(tmp_path):
    """As the GeoJSON reader: a later contour paints over an earlier one, and a nucleus left with no pixel
    (covered by later ones, outside the tile) is left out and counted."""
    (tmp_path / "Images").mkdir()
    (tmp_path / "json").mkdir()
    save_rgb(tmp_path / "Images" / "t.png", np.full((20, 20, 3), 200, np.uint8))
    square = lambda x0, y0, x1, y1: [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]   # noqa: E731
    nuclei = {"1": {"contour": square(3, 3, 5, 5), "type": 1},      # under nucleus 2
              "2": {"contour": square(2, 2, 7, 7), "type": 1},
              "3": {"contour": square(30, 4, 35, 8), "type": 1}}    # right of the tile
    (tmp_path / "json" / "t.json").write_text(json.dumps({"mag": None, "nuc": nuclei}))
    image, = read_dataset("hovernet", tmp_path, class_names=["neoplastic"]).images
    assert image.instance_map.max() == 1 and (image.instance_map == 1).sum() == 36
    assert image.left_out == {"covered": 1, "outside": 1}
