"""Exporters, the inverse of :mod:`mlcore.readers`, and per-nucleus outlines for the web app (the
geometry itself, boxes, centroids and areas, lives in :mod:`mlcore.geometry`).

Stored outlines (for drawing) follow OpenCV: a contour runs through the centres of an instance's boundary
pixels. Files in COCO and GeoJSON use pixel-edge coordinates (pixel (0, 0) covers [0, 1) x [0, 1)), and
their polygons are the instances' exact pixel-edge rings (:func:`edge_rings`): pycocotools, QuPath and the
readers here fill them back to the same pixels, holes included in GeoJSON (COCO polygons cannot hold a
hole). RLE exports are exact too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from PIL import Image

# nucleus_geometry is the exporters' record form of mlcore.geometry (its home), imported here for them.
from mlcore.geometry import GEOMETRY_DTYPE, geometry_records, instance_geometry, instance_masks, nucleus_geometry
from mlcore.types import MISSING, LabelSet, NucleusDataset

_HALF_PIXEL = 0.5  # OpenCV pixel-centre coordinates -> pixel-edge coordinates of COCO and QuPath


# ----------------------------------------------------------------------------------------------- outlines

def _outer_contours(mask: np.ndarray, rows: slice, cols: slice) -> list[np.ndarray]:
    """Outer contours of a padded instance mask in image coordinates, largest first."""
    traced, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                 offset=(cols.start - 1, rows.start - 1))
    if len(traced) > 1:
        traced = sorted(traced, key=lambda c: (-cv2.contourArea(c), -len(c)))
    return list(traced)


def instance_contours(instance_map: np.ndarray) -> dict[int, list[np.ndarray]]:
    """Outer contours of every instance (K x 2 int arrays of x, y), largest first.

    One contour per connected piece of an instance; holes are not traced.
    """
    return {instance_id: [c.reshape(-1, 2) for c in _outer_contours(mask, rows, cols)]
            for instance_id, rows, cols, mask in instance_masks(instance_map)}


def nucleus_outlines(instance_map: np.ndarray, epsilon: float = 1.0) -> dict[int, list[list[int]]]:
    """A simplified outer polygon per instance: ``{id: [[x, y], ...]}`` in pixel-centre coordinates.

    The largest piece of each instance, simplified with cv2.approxPolyDP (``epsilon`` = the largest
    distance in pixels between outline and polygon; 0 keeps every corner).
    """
    outlines = {}
    for instance_id, pieces in instance_contours(instance_map).items():
        outline = pieces[0].reshape(-1, 1, 2)
        if epsilon > 0 and len(outline) > 3:
            outline = cv2.approxPolyDP(outline, epsilon, True)
        outlines[instance_id] = outline.reshape(-1, 2).tolist()
    return outlines


def geometry_and_outlines(instance_map: np.ndarray, epsilon: float = 1.0) -> tuple[np.ndarray, list]:
    """:func:`nucleus_geometry` and :func:`nucleus_outlines` together, with the same results (the import
    of the web app uses it per image): one :func:`~mlcore.geometry.instance_geometry` pass gives the
    records and the boxes that the outlines are traced in.

    Returns the geometry (GEOMETRY_DTYPE, sorted by id) and the outlines ([[x, y], ...]) in that order.
    """
    instance_map = np.asarray(instance_map)
    if instance_map.size == 0:
        return np.zeros(0, GEOMETRY_DTYPE), []
    geometry = instance_geometry(instance_map)
    outlines = []
    for _, rows, cols, crop in instance_masks(instance_map, geometry):
        outline = _outer_contours(crop, rows, cols)[0]
        if epsilon > 0 and len(outline) > 3:
            outline = cv2.approxPolyDP(outline, epsilon, True)
        outlines.append(outline.reshape(-1, 2).tolist())
    return geometry_records(geometry), outlines


# ---------------------------------------------------------------------------------------------------- RLE

def encode_rle(instance_mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a boolean mask: ``{"counts": [...], "size": [h, w]}``, column-major."""
    mask = np.asarray(instance_mask, dtype=bool)
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    return {"counts": _rle_counts(np.sort(cols.astype(np.int64) * height + rows), height * width),
            "size": [int(height), int(width)]}


def _rle_counts(flat_indices: np.ndarray, total: int) -> list[int]:
    """Run lengths (background first) from sorted column-major indices of the foreground pixels."""
    if flat_indices.size == 0:
        return [int(total)]
    breaks = np.flatnonzero(np.diff(flat_indices) != 1)
    starts = np.concatenate([flat_indices[:1], flat_indices[breaks + 1]])
    ends = np.concatenate([flat_indices[breaks] + 1, flat_indices[-1:] + 1])
    counts = np.empty(2 * starts.size + 1, np.int64)
    counts[0] = starts[0]
    counts[1::2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = total - ends[-1]
    return counts.tolist()


def compress_rle_counts(counts: Sequence[int]) -> str:
    """COCO's compressed RLE string (pycocotools' ``rleToString``), decoded by the COCO reader.

    From the fourth count on, the difference from the count two places before is stored; each number is
    written in 5-bit groups, least significant first, offset by '0' (48); 0x20 marks a following group
    and 0x10 of the last group carries the sign.
    """
    text = []
    for position, count in enumerate(counts):
        value = int(count) - (int(counts[position - 2]) if position > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: negative values end at -1
            more = value != -1 if group & 0x10 else value != 0
            text.append(chr(group + (0x20 if more else 0) + 48))
    return "".join(text)


# ------------------------------------------------------------------------------------------------ writers

def _edge_ring(contour: np.ndarray) -> list[list[float]]:
    """A stored outline (pixel centres) in pixel-edge coordinates with at least three vertices (tiny nuclei
    repeat points)."""
    points = (contour.astype(np.float64) + _HALF_PIXEL).tolist()
    while len(points) < 3:
        points.append(points[-1])
    return points


def edge_rings(instance_map: np.ndarray, holes: bool = False) -> dict[int, list[list[np.ndarray]]]:
    """Every instance as polygons along its pixels' outer edges, in pixel-edge coordinates: ``{id: [[outer,
    hole, ...], ...]}``, one polygon per 4-connected piece (largest first), each ring K x 2 int x, y with no
    repeated or collinear vertex. A 10 x 10 pixel nucleus is the 10 x 10 square its pixels cover, which is
    what pycocotools and QuPath fill; a ring through the boundary pixels' centres is half a pixel inside it
    all round (a 10-pixel nucleus 19 % smaller, a one-pixel one empty). With ``holes``, inner rings too.

    The mask is traced at twice its size: each pixel is a 2 x 2 block, whose boundary sub-pixels' centres lie
    a quarter pixel inside the original pixel's corners, so rounding them gives those corners exactly."""
    mode = cv2.RETR_CCOMP if holes else cv2.RETR_EXTERNAL
    rings = {}
    for instance_id, rows, cols, mask in instance_masks(instance_map):
        origin = np.array([cols.start - 1, rows.start - 1])
        # One polygon per 4-connected piece: pixels that touch only at a corner would make a ring that touches
        # itself there, which OGC geometry (QuPath's JTS, shapely) calls invalid; as two polygons of a
        # MultiPolygon they may touch.
        count, pieces_map = cv2.connectedComponents(mask, connectivity=4)
        pieces = []
        for piece in range(1, count):
            doubled = np.repeat(np.repeat((pieces_map == piece).astype(np.uint8), 2, axis=0), 2, axis=1)
            traced, hierarchy = cv2.findContours(doubled, mode, cv2.CHAIN_APPROX_NONE)
            corners = [_corners(np.floor(c.reshape(-1, 2) / 2 + 0.75).astype(np.int64) + origin) for c in traced]
            parents = hierarchy[0][:, 3] if len(traced) else []
            pieces += [[corners[i], *(corners[j] for j in range(len(traced)) if parents[j] == i)]
                       for i in range(len(traced)) if parents[i] < 0]
        pieces.sort(key=lambda piece: -abs(cv2.contourArea(piece[0].astype(np.float32))))
        rings[instance_id] = pieces
    return rings


def _corners(points: np.ndarray) -> np.ndarray:
    """A closed ring's vertices without consecutive repeats and without points inside a straight run."""
    points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]
    if len(points) < 3:
        return points
    before, after = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
    straight = (before[:, 0] * after[:, 1] == before[:, 1] * after[:, 0]) & (np.sum(before * after, axis=1) > 0)
    return points[~straight]


def _class_of(classes: dict[int, int], instance_id: int, label_set: LabelSet | None) -> int | None:
    index = classes.get(instance_id, MISSING)
    if index == MISSING:
        return None
    if label_set is None or not 0 <= index < len(label_set):
        raise ValueError(f"instance {instance_id} has class index {index}, outside the label set "
                         f"{list(label_set.classes) if label_set else None}")
    return index


def exact_geometries(instance_map: np.ndarray) -> dict[int, dict]:
    """Each instance's GeoJSON geometry along its pixels' edges, holes included: a Polygon, or a MultiPolygon
    for an instance in several 4-connected pieces. Outer rings run counter-clockwise and holes clockwise in the
    coordinates as written, as RFC 7946 asks (and as QuPath's own outlines come)."""
    geometries = {}
    for instance_id, pieces in edge_rings(instance_map, holes=True).items():
        # edge_rings traces outer rings clockwise as written: reversed, and closed.
        polygons = [[[*ring[::-1].tolist(), ring[-1].tolist()] for ring in piece] for piece in pieces]
        geometries[instance_id] = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                                   else {"type": "MultiPolygon", "coordinates": polygons})
    return geometries


def geojson_features(instance_map: np.ndarray, classes: dict[int, int], label_set: LabelSet | None,
                     object_type: str = "annotation") -> list[dict]:
    """One QuPath-style GeoJSON Feature per instance, in id order (see :func:`write_geojson`)."""
    features = []
    for instance_id, geometry in exact_geometries(instance_map).items():
        properties: dict = {"objectType": object_type, "instance_id": int(instance_id)}
        index = _class_of(classes, instance_id, label_set)
        if index is not None:
            properties["classification"] = {"name": label_set.classes[index],
                                            "color": [int(v) for v in label_set.colors[index]]}
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return features


def outline_feature(outline: Sequence[Sequence[float]], object_type: str = "detection",
                    classification: tuple[str, Sequence[int]] | None = None,
                    measurements: dict[str, float] | None = None, box: Sequence[int] | None = None,
                    geometry: dict | None = None, **properties) -> dict:
    """A QuPath GeoJSON Feature from a stored outline ([[x, y], ...], pixel-centre coordinates as
    :func:`nucleus_outlines` gives them), for exports that have the outlines but not the masks.

    The ring is shifted to pixel-edge coordinates like the other writers, runs counter-clockwise as written (RFC
    7946; OpenCV's outlines run clockwise) and is closed (first point repeated at the end), with at least four
    positions as GeoJSON requires. ``classification``:
    ``(name, (r, g, b))``, QuPath's ``{"name", "color": [r, g, b]}``; ``measurements``: QuPath's map of
    measurement name to number (None values are left out); ``box``: the nucleus's pixel box, written instead of
    an outline of no area. ``geometry``: the nucleus's exact shape where the caller has its mask
    (:func:`exact_geometries`), written instead of the outline. Further keyword arguments become properties.
    """
    ring = _edge_ring(np.asarray(outline, dtype=np.float64).reshape(-1, 2))
    if box is not None and _flat(ring):
        # A nucleus one pixel wide or tall (often cut by the tile's edge): its outline through the pixels'
        # centres is a point or a line, a polygon of no area that GeoJSON readers refuse; its pixels' box is
        # the nucleus (``box``: x0, y0, x1, y1, the ends exclusive, as pixel edges).
        x0, y0, x1, y1 = (float(v) for v in box)
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    if _twice_area(ring) < 0:
        ring.reverse()
    ring.append(ring[0])
    feature_properties: dict = {"objectType": object_type}
    if classification is not None:
        name, color = classification
        feature_properties["classification"] = {"name": name, "color": [int(v) for v in color]}
    if measurements is not None:
        feature_properties["measurements"] = {key: float(value) for key, value in measurements.items()
                                              if value is not None}
    feature_properties.update(properties)
    return {"type": "Feature", "geometry": geometry or {"type": "Polygon", "coordinates": [ring]},
            "properties": feature_properties}


def _twice_area(ring: list[list[float]]) -> float:
    """Twice the signed (shoelace) area of a ring, its last point joined to its first: positive where it runs
    counter-clockwise in the coordinates as written."""
    points = np.asarray(ring, dtype=np.float64)
    x, y = points[:, 0], points[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _flat(ring: list[list[float]]) -> bool:
    """A ring of no area: fewer than three distinct points, or all on one line."""
    return abs(_twice_area(ring)) < 1e-9


def feature_collection_text(features: Iterable[dict]) -> Iterable[str]:
    """A GeoJSON FeatureCollection as pieces of text, one Feature at a time: a caller can stream a
    collection of any size without holding it (``"".join`` gives the whole document)."""
    yield '{"type":"FeatureCollection","features":['
    separator = ""
    for feature in features:
        yield separator + json.dumps(feature, separators=(",", ":"))
        separator = ","
    yield "]}"


def write_geojson(path: str | Path, instance_map: np.ndarray, classes: dict[int, int], label_set: LabelSet | None,
                  object_type: str = "annotation") -> Path:
    """Write the nuclei of one image as a QuPath-compatible GeoJSON FeatureCollection.

    One Feature per instance: a Polygon (MultiPolygon for an instance in several pieces) from its outer
    contour, ``properties.objectType`` (``"annotation"`` or ``"detection"``), ``classification``
    ``{"name", "color": [r, g, b]}`` (absent for unlabelled nuclei) and ``instance_id``.
    """
    if object_type not in ("annotation", "detection"):
        raise ValueError(f"object_type must be 'annotation' or 'detection', got {object_type!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    collection = {"type": "FeatureCollection",
                  "features": geojson_features(instance_map, classes, label_set, object_type)}
    path.write_text(json.dumps(collection))
    return path


def coco_dict(images: Iterable[tuple[str, np.ndarray, dict[int, int]]], label_set: LabelSet | None,
              segmentation: str = "polygon") -> dict:
    """The COCO instances dictionary that :func:`write_coco` writes."""
    records, every_annotation = [], []
    for record, of_image in coco_records(images, label_set, segmentation):
        records.append(record)
        every_annotation += of_image
    return {"images": records, "annotations": every_annotation, "categories": coco_categories(label_set)}


def coco_categories(label_set: LabelSet | None) -> list[dict]:
    return [{"id": index + 1, "name": name, "supercategory": "nucleus", "color": list(color)}
            for index, (name, color) in enumerate(zip(label_set.classes, label_set.colors))] if label_set else []


def coco_records(images: Iterable[tuple[str, np.ndarray, dict[int, int]]], label_set: LabelSet | None,
                 segmentation: str = "polygon") -> Iterator[tuple[dict, list[dict]]]:
    """Per image of ``(file_name, instance_map, classes)``: its COCO image record and its annotations (ids run on
    across the images), one image at a time, so that a caller can stream any number of them."""
    if segmentation not in ("polygon", "rle", "compressed_rle"):
        raise ValueError(f"segmentation must be 'polygon', 'rle' or 'compressed_rle', got {segmentation!r}")
    next_id = 1
    for image_id, (file_name, instance_map, classes) in enumerate(images, start=1):
        instance_map = np.asarray(instance_map)
        height, width = instance_map.shape
        record = {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}
        pieces = edge_rings(instance_map) if segmentation == "polygon" else {}
        of_image = []
        boxes = nucleus_geometry(instance_map)
        if segmentation == "polygon":
            # A COCO polygon has no hole, so a nucleus lying in another's hole is inside that one's polygon too:
            # largest first, so that a reader painting them in order (this one's, most converters') paints the
            # enclosed nucleus last instead of losing it under the other.
            boxes = boxes[np.argsort(-boxes["area"], kind="stable")]
        for box in boxes:
            instance_id = int(box["id"])
            index = _class_of(classes, instance_id, label_set)
            if segmentation == "polygon":
                shape = [piece[0].ravel().tolist() for piece in pieces[instance_id]]
            else:
                rows = slice(box["y0"], box["y1"])
                cols = slice(box["x0"], box["x1"])
                local_rows, local_cols = np.nonzero(instance_map[rows, cols] == instance_id)
                flat = np.sort((local_cols + box["x0"]).astype(np.int64) * height + local_rows + box["y0"])
                counts = _rle_counts(flat, height * width)
                shape = {"counts": compress_rle_counts(counts) if segmentation == "compressed_rle" else counts,
                         "size": [int(height), int(width)]}
            of_image.append({
                "id": next_id, "image_id": image_id,
                "category_id": index + 1 if index is not None else 0,  # 0: unlabelled nucleus
                "segmentation": shape, "area": int(box["area"]), "iscrowd": 0,
                "bbox": [int(box["x0"]), int(box["y0"]), int(box["x1"] - box["x0"]), int(box["y1"] - box["y0"])],
            })
            next_id += 1
        yield record, of_image


def coco_json_text(images: Iterable[tuple[str, np.ndarray, dict[int, int]]], label_set: LabelSet | None,
                   segmentation: str = "polygon", info: dict | None = None) -> Iterator[str]:
    """:func:`coco_dict` (with ``info``) as pieces of JSON text, one image's annotations at a time: a dataset of
    any size is written without holding its annotations. The image records, a few numbers each, are held and
    written last (JSON's keys have no order)."""
    yield (f'{{"info":{json.dumps(info or {})},"categories":{json.dumps(coco_categories(label_set))},'
           '"annotations":[')
    records, separator = [], ""
    for record, of_image in coco_records(images, label_set, segmentation):
        records.append(record)
        if of_image:
            yield separator + ",".join(json.dumps(a, separators=(",", ":")) for a in of_image)
            separator = ","
    yield f'],"images":{json.dumps(records)}}}'


def write_coco(path_json: str | Path, images: Iterable[tuple[str, np.ndarray, dict[int, int]]],
               label_set: LabelSet | None, segmentation: str = "polygon") -> Path:
    """Write COCO instances JSON for ``(file_name, instance_map, classes)`` triples.

    ``segmentation``: ``"polygon"`` (the outer pixel-edge rings: exact but for holes), ``"rle"`` (uncompressed,
    exact) or ``"compressed_rle"`` (COCO's string encoding, exact). Category ids are label-set index + 1;
    unlabelled nuclei get ``category_id`` 0, which the COCO reader reads back as unlabelled. The images
    themselves are not written.
    """
    path_json = Path(path_json)
    path_json.parent.mkdir(parents=True, exist_ok=True)
    path_json.write_text(json.dumps(coco_dict(images, label_set, segmentation)))
    return path_json


def write_seed_types(path_npy: str | Path, classes: dict[int, int]) -> Path:
    """Write the seed format's types table: N x 2 int32 (instance id, class index), sorted by id."""
    path_npy = Path(path_npy)
    path_npy.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted((int(i), int(c)) for i, c in classes.items() if c != MISSING)
    np.save(path_npy, np.array(rows, dtype=np.int32).reshape(-1, 2))
    return path_npy


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Save an RGB uint8 image losslessly (PNG unless the suffix says otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
    return path


def write_hovernet_labels(path_mat: str | Path, instance_map: np.ndarray, classes: dict[int, int]) -> Path:
    """Write a HoVer-Net ``.mat``: inst_map, inst_type (N x 1, class index + 1, 0 = no label), type_map,
    inst_centroid (N x 2, x then y), with N the largest instance id."""
    path_mat = Path(path_mat)
    path_mat.parent.mkdir(parents=True, exist_ok=True)
    instance_map = np.asarray(instance_map, dtype=np.int32)
    n = int(instance_map.max()) if instance_map.size else 0
    lookup = np.zeros(n + 1, np.int32)
    for instance_id, index in classes.items():
        if index != MISSING and 0 < instance_id <= n:
            lookup[instance_id] = index + 1
    centroids = np.zeros((n, 2))
    geometry = nucleus_geometry(instance_map)
    centroids[geometry["id"] - 1] = np.stack([geometry["cx"], geometry["cy"]], axis=1)
    scipy.io.savemat(path_mat, {"inst_map": instance_map, "inst_type": lookup[1:].reshape(-1, 1),
                                "type_map": lookup[instance_map], "inst_centroid": centroids},
                     do_compression=True)
    return path_mat


def write_dataset(dataset: NucleusDataset, format: str, root: str | Path,
                  coco_segmentation: str = "compressed_rle") -> Path:
    """Export a whole dataset in one of the reader formats; ``read_dataset(format, root)`` reads it back.

    Images are written as PNG. COCO uses ``coco_segmentation`` (exact RLE by default).
    """
    writer = _WRITERS.get(format)
    if writer is None:
        raise ValueError(f"unknown dataset format {format!r} (allowed: {', '.join(_WRITERS)})")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    writer(dataset, root, coco_segmentation=coco_segmentation)
    return root


def _write_seed(dataset: NucleusDataset, root: Path, **_) -> None:
    (root / "masks").mkdir(exist_ok=True)
    for item in dataset.images:
        save_rgb(root / "images" / f"{item.name}.png", item.image)
        np.save(root / "masks" / f"{item.name}.npy", item.instance_map.astype(np.int32))
        write_seed_types(root / "types" / f"{item.name}.npy", item.classes)
    if dataset.label_set is not None:
        (root / "classes.json").write_text(json.dumps(
            {"classes": list(dataset.label_set.classes), "colors": [list(c) for c in dataset.label_set.colors]},
            indent=1))


def _write_coco(dataset: NucleusDataset, root: Path, *, coco_segmentation: str, **_) -> None:
    for item in dataset.images:
        save_rgb(root / "images" / f"{item.name}.png", item.image)
    write_coco(root / "annotations.json", [(f"{item.name}.png", item.instance_map, item.classes)
                                           for item in dataset.images], dataset.label_set, coco_segmentation)


def _write_geojson(dataset: NucleusDataset, root: Path, **_) -> None:
    for item in dataset.images:
        save_rgb(root / f"{item.name}.png", item.image)
        write_geojson(root / f"{item.name}.geojson", item.instance_map, item.classes, dataset.label_set)


def _write_hovernet(dataset: NucleusDataset, root: Path, **_) -> None:
    for item in dataset.images:
        save_rgb(root / "Images" / f"{item.name}.png", item.image)
        write_hovernet_labels(root / "Labels" / f"{item.name}.mat", item.instance_map, item.classes)
    label_set = dataset.label_set
    if label_set is not None:
        info = {"0": ["nolabel", [0, 0, 0]]}
        info.update({str(i + 1): [name, list(color)]
                     for i, (name, color) in enumerate(zip(label_set.classes, label_set.colors))})
        (root / "type_info.json").write_text(json.dumps(info, indent=1))


def _write_pannuke(dataset: NucleusDataset, root: Path, **_) -> None:
    if dataset.label_set is None:
        raise ValueError("PanNuke arrays need classes: one mask channel per class")
    shapes = {item.image.shape for item in dataset.images}
    if len(shapes) != 1:
        raise ValueError(f"PanNuke arrays need images of one size, got {sorted(shapes)}")
    n_classes = len(dataset.label_set)
    (height, width, _), = shapes
    masks = np.zeros((len(dataset.images), height, width, n_classes + 1), np.int32)
    for n, item in enumerate(dataset.images):
        ids = np.unique(item.instance_map)
        unlabelled = [int(i) for i in ids if i > 0 and item.classes.get(int(i), MISSING) == MISSING]
        if unlabelled:
            raise ValueError(f"{item.name}: PanNuke arrays cannot hold unlabelled nuclei ({len(unlabelled)})")
        lookup = np.full(int(ids.max()) + 1, n_classes, np.int64)
        for instance_id, index in item.classes.items():
            if instance_id < lookup.size:
                lookup[instance_id] = index
        channel = lookup[item.instance_map]
        rows, cols = np.nonzero(item.instance_map)
        masks[n, rows, cols, channel[rows, cols]] = item.instance_map[rows, cols]
        masks[n, :, :, n_classes] = item.instance_map == 0
    np.save(root / "images.npy", np.stack([item.image for item in dataset.images]))
    np.save(root / "masks.npy", masks)


# The writer of each reader format, like mlcore.readers' registry: write_dataset(d, name, root) is read
# back by read_dataset(name, root).
_WRITERS = {"seed": _write_seed, "hovernet": _write_hovernet, "coco": _write_coco, "geojson": _write_geojson,
            "pannuke": _write_pannuke}
