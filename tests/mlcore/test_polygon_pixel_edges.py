"""Polygons in COCO and GeoJSON files are pixel-edge rings: pixel (x, y) covers [x, x + 1) x [y, y + 1), and a
polygon holds the pixels whose centres lie in it, as pycocotools and QuPath read them. The exports write each
nucleus's exact ring along its pixels' edges and the readers fill them back to the same pixels; a ring through
the boundary pixels' centres (the exports before 2026-12-07) still reads back to its pixels."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mlcore.readers import read_dataset
from mlcore.readers._common import polygon_mask
from mlcore.types import LabelSet
from mlcore.writers import coco_dict, edge_rings, geojson_features, save_rgb


def painted(rings, height=40, width=40) -> np.ndarray:
    result = polygon_mask([(np.asarray(outer, float), [np.asarray(h, float) for h in holes]) for outer, holes in rings],
                          height, width, Path("nuclei.geojson"), "feature #0")
    mask = np.zeros((height, width), bool)
    if result is not None:
        (rows, cols), patch = result
        mask[rows, cols] = patch
    return mask


def blobs(seed: int, size: int = 160, count: int = 90, pepper: float = 0.04) -> np.ndarray:
    """Ellipses of 1-16 pixels across, some overlapping, peppered with background pixels: holes, one-pixel
    necks and pieces touching only at a corner."""
    rng = np.random.default_rng(seed)
    instance_map = np.zeros((size, size), np.int32)
    for instance_id in range(1, count + 1):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))  # some touch the image's edge
        axes = (int(rng.uniform(0, 8)), int(rng.uniform(0, 8)))
        cv2.ellipse(instance_map, centre, axes, float(rng.uniform(0, 180)), 0, 360, instance_id, -1)
    instance_map[rng.random(instance_map.shape) < pepper] = 0
    return instance_map


def test_a_pixel_edge_square_holds_exactly_its_pixels():
    # QuPath's 20 x 20 pixel square, as its own "Nucleus: Area" of 400 says.
    square = painted([([[10, 10], [30, 10], [30, 30], [10, 30]], [])])
    assert square.sum() == 400 and square[10:30, 10:30].all()
    with_hole = painted([([[0, 0], [20, 0], [20, 20], [0, 20]], [[[5, 5], [15, 5], [15, 15], [5, 15]]])])
    assert with_hole.sum() == 300 and not with_hole[5:15, 5:15].any()
    # Through the boundary pixels' centres (pixel centres + 0.5): the pixels on the ring are the nucleus's too.
    through_centres = painted([([[10.5, 10.5], [29.5, 10.5], [29.5, 29.5], [10.5, 29.5]], [])])
    assert np.array_equal(through_centres, square)
    diamond = painted([([[20.5, 10.5], [30.5, 20.5], [20.5, 30.5], [10.5, 20.5]], [])])
    assert diamond.sum() == 2 * 10 * 11 + 1 and diamond[30, 20] and diamond[10, 20]  # |dx| + |dy| <= 10


def test_a_polygon_smaller_than_a_pixel_still_marks_the_pixel_under_it():
    # PanNuke's polygons include one-pixel nuclei as diamonds between pixel centres: no centre lies in them.
    tiny = painted([([[4.5, 5], [5, 5.5], [5.5, 5], [5, 4.5]], [])])
    assert np.argwhere(tiny).tolist() == [[5, 5]]
    assert np.argwhere(painted([([[7.5, 3.5]] * 3, [])])).tolist() == [[3, 7]]
    assert not painted([([[50, 50], [51, 50], [51, 51]], [])]).any()  # outside the image: nothing


def test_exported_rings_run_along_the_pixel_edges():
    instance_map = np.zeros((20, 20), np.int32)
    instance_map[5:15, 5:15] = 1
    instance_map[17, 2] = 2
    rings = edge_rings(instance_map)
    assert sorted(rings[1][0][0].tolist()) == [[5, 5], [5, 15], [15, 5], [15, 15]]
    assert sorted(rings[2][0][0].tolist()) == [[2, 17], [2, 18], [3, 17], [3, 18]]
    coco = coco_dict([("t.png", instance_map, {1: 0, 2: 0})], LabelSet("s", ("a",)), "polygon")
    for annotation in coco["annotations"]:
        ring = np.asarray(annotation["segmentation"][0], float).reshape(-1, 2)
        shoelace = abs(np.dot(ring[:, 0], np.roll(ring[:, 1], 1)) - np.dot(ring[:, 1], np.roll(ring[:, 0], 1))) / 2
        assert shoelace == annotation["area"]  # 100 and 1: what the polygon covers is the nucleus


@pytest.mark.parametrize("seed", [1, 2])
def test_every_nucleus_comes_back_pixel_for_pixel(seed):
    instance_map = blobs(seed)
    rings = edge_rings(instance_map, holes=True)
    holes = 0
    for instance_id, pieces in rings.items():
        back = painted([(piece[0], piece[1:]) for piece in pieces], *instance_map.shape)
        assert np.array_equal(back, instance_map == instance_id), f"instance {instance_id}"
        holes += sum(len(piece) - 1 for piece in pieces)
    assert holes > 0 and len(rings) > 60


def test_geojson_export_keeps_holes_and_reads_back_exactly(tmp_path):
    instance_map = blobs(3, size=96, count=40)
    save_rgb(tmp_path / "t.png", np.full((96, 96, 3), 200, np.uint8))
    features = geojson_features(instance_map, {}, None, "detection")
    (tmp_path / "t.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    back = read_dataset("geojson", tmp_path, labelled=False).images[0].instance_map
    # Instances are renumbered in file order (ids order here); a later nucleus paints over an earlier one.
    ids = np.unique(instance_map)[1:]
    assert len(np.unique(back)) - 1 == len(ids)
    for new_id, instance_id in enumerate(ids, start=1):
        assert np.array_equal(back == new_id, instance_map == instance_id)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools 2.0.11, numpy 2
def test_pycocotools_decodes_the_polygon_export_to_the_masks():
    """pycocotools, which scores most segmentation benchmarks, fills the export back to the nuclei. It rasterises
    on a finer grid, so a one-pixel slit or notch may come back filled: nearly every nucleus is exact, none is
    off by more than a few pixels (rings through the boundary pixels' centres lost a 10-pixel nucleus's outer
    half-pixel all round, and every one-pixel nucleus)."""
    coco_mask = pytest.importorskip("pycocotools.mask",
                                    reason="pycocotools is a dev requirement (requirements-dev.txt)")
    instance_map = blobs(4, pepper=0.0)
    height, width = instance_map.shape
    coco = coco_dict([("t.png", instance_map, {})], None, "polygon")
    ids, areas = np.unique(instance_map[instance_map > 0], return_counts=True)
    ids = ids[np.argsort(-areas, kind="stable")]   # the polygon export's order: largest first
    assert [a["area"] for a in coco["annotations"]] == [int((instance_map == i).sum()) for i in ids]
    exact, ious = 0, []
    for annotation, instance_id in zip(coco["annotations"], ids):
        truth = instance_map == instance_id
        decoded = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(annotation["segmentation"], height,
                                                                         width))).astype(bool)
        exact += np.array_equal(decoded, truth)
        ious.append((decoded & truth).sum() / (decoded | truth).sum())
    assert exact >= 0.95 * len(ids) and min(ious) > 0.95, (exact, len(ids), min(ious))


def test_no_ring_touches_itself():
    """Pixels that touch only at a corner are two polygons: one ring through that corner twice is invalid OGC
    geometry (QuPath's JTS and shapely refuse it), though it fills the same pixels."""
    diagonal = np.zeros((6, 6), np.int32)
    diagonal[1, 1] = diagonal[2, 2] = diagonal[3, 3] = 1
    assert len(edge_rings(diagonal)[1]) == 3
    for seed in (1, 2, 5):
        for pieces in edge_rings(blobs(seed), holes=True).values():
            for piece in pieces:
                for ring in piece:
                    assert len({tuple(v) for v in ring.tolist()}) == len(ring), ring.tolist()


def test_a_nucleus_in_another_ones_hole_survives_the_polygon_export(tmp_path):
    """A COCO polygon cannot hold the hole: written in id order, the enclosing nucleus came last and its
    filled polygon painted over the one inside (1 nucleus of 64 px instead of 16 + 48)."""
    instance_map = np.zeros((16, 16), np.int32)
    instance_map[4:12, 4:12] = 2
    instance_map[6:10, 6:10] = 1
    from mlcore.writers import write_coco

    save_rgb(tmp_path / "images" / "t.png", np.full((16, 16, 3), 200, np.uint8))
    write_coco(tmp_path / "annotations.json", [("t.png", instance_map, {1: 0, 2: 0})], LabelSet("s", ("a",)))
    back = read_dataset("coco", tmp_path).images[0].instance_map
    assert sorted(np.unique(back[back > 0], return_counts=True)[1].tolist()) == [16, 48]


def test_a_large_polygon_is_filled_in_blocks_of_rows():
    """A region the size of a tile (a tissue annotation among the nuclei) is filled a block of rows at a time:
    the work arrays stay a few MB beside the patch itself (an 8,000 px square took 1.5 GB at once)."""
    import tracemalloc

    side = 3000
    tracemalloc.start()
    result = polygon_mask([(np.array([[0, 0], [side, 0], [side, side], [0, side]], float), [])], side, side,
                          Path("regions.geojson"), "feature #0")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result[1].all() and result[1].shape == (side, side)
    assert peak < side * side + 64 * 2**20, peak   # the boolean patch, and tens of MB of work arrays
