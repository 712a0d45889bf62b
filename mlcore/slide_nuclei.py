"""The nuclei of a whole slide, streamed: from a QuPath GeoJSON export of detections or from an instance-label
mask stored as a tiled TIFF, and back out to GeoJSON. Memory stays bounded whatever the number of nuclei:
one feature (or one strip of the mask) at a time.

Every nucleus comes out as a :class:`SlideNucleus` in level-0 pixel coordinates, with the geometry the tile
importer stores for a tile's nuclei (``mlcore.writers.geometry_and_outlines``):

- ``bbox`` (x0, y0, x1, y1), x1 and y1 exclusive, and ``area`` and ``centroid`` (x, y; the mean pixel
  position, pixel-centre coordinates) of the nucleus's pixels;
- ``outline``: the outer polygon through the centres of its boundary pixels, simplified with
  ``cv2.approxPolyDP`` (at most one pixel away), as int32 (K, 2) x, y.

From GeoJSON the pixels are the polygon's, rasterised as the tile GeoJSON reader does
(``mlcore.readers._common.polygon_mask``: QuPath's pixel-edge coordinates, holes subtracted). The outline is
the file's polygon itself, shifted to pixel centres (rounded toward the nucleus's centre) and simplified. Its
simplification is made idempotent (repeated until stable, one orientation, one starting vertex), so writing nuclei with
:func:`write_geojson_nuclei` and reading them back gives the same outlines, and a second round trip gives
the same nuclei exactly. From a mask, the pixels are the mask's and the outline is traced as the tile
importer traces it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from mlcore import limits
from mlcore.readers._common import QUPATH_NOT_NUCLEI
from mlcore.types import DataError, name_problem, quoted

OUTLINE_EPSILON = 1.0  # pixels, as the tile importer simplifies outlines
_HALF_PIXEL = 0.5      # OpenCV pixel-centre coordinates <-> QuPath's pixel-edge coordinates
_FAR = 2**31 - 1       # no image border: a slide's GeoJSON is read without the slide


class SlideNucleiError(DataError):
    """A slide's nuclei file that cannot be read. ``path`` is the user's file name, never a server path;
    the message names it and the feature (``feature #k``, counted from 0 in file order)."""


@dataclass(frozen=True, eq=False)
class SlideNucleus:
    outline: np.ndarray                     # int32 (K, 2) x, y, level-0 pixel centres, simplified
    bbox: tuple[int, int, int, int]         # x0, y0, x1, y1 (x1, y1 exclusive)
    centroid: tuple[float, float]           # x, y: mean pixel position
    area: int                               # pixels
    class_name: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlideNucleus):
            return NotImplemented
        return (np.array_equal(self.outline, other.outline) and self.bbox == other.bbox
                and self.centroid == other.centroid and self.area == other.area
                and self.class_name == other.class_name and self.measurements == other.measurements)

    __hash__ = None  # type: ignore[assignment]  # holds an array


# ----------------------------------------------------------------------------------------------- geometry

def simplify_outline(points: np.ndarray, epsilon: float = OUTLINE_EPSILON) -> np.ndarray:
    """A closed polygon (K, 2) of integer pixel centres, simplified with ``cv2.approxPolyDP`` until that no
    longer removes a vertex, then put in one orientation (positive shoelace area in image coordinates) and
    started at its top-most, then left-most vertex. Simplifying the result again returns it unchanged."""
    polygon = _canonical(_without_repeats(np.asarray(points, dtype=np.int32).reshape(-1, 2)))
    while len(polygon) > 3 and epsilon > 0:
        simpler = _canonical(cv2.approxPolyDP(polygon.reshape(-1, 1, 2), epsilon, True).reshape(-1, 2))
        if len(simpler) == len(polygon):
            break  # approxPolyDP keeps a subset in order: the same count is the same polygon
        polygon = simpler
    return polygon


def _without_repeats(polygon: np.ndarray) -> np.ndarray:
    if len(polygon) > 1:
        keep = np.empty(len(polygon), bool)
        keep[0] = (polygon[0] != polygon[-1]).any()
        np.any(polygon[1:] != polygon[:-1], axis=1, out=keep[1:])
        if not keep.any():
            return polygon[:1]
        polygon = polygon[keep]
    return polygon


def _canonical(polygon: np.ndarray) -> np.ndarray:
    # Slices, not np.roll: this runs once or twice per nucleus, on a few dozen vertices.
    polygon = np.ascontiguousarray(polygon, dtype=np.int32)
    order_key = (polygon[:, 1].astype(np.int64) << 32) + polygon[:, 0]
    if len(polygon) < 3:  # a point or a segment: its ends in (y, x) order
        return np.ascontiguousarray(polygon[np.argsort(order_key, kind="stable")])
    x, y = polygon[:, 0].astype(np.int64), polygon[:, 1].astype(np.int64)
    twice_area = int(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0])
    if twice_area < 0:
        polygon, order_key = polygon[::-1], order_key[::-1]
    start = int(np.argmin(order_key))
    if start == 0:
        return np.ascontiguousarray(polygon)
    return np.concatenate((polygon[start:], polygon[:start]))


def _mask_measures(mask: np.ndarray, x0: int, y0: int) -> tuple[tuple[int, int, int, int], tuple[float, float], int]:
    """Box, centroid and area of a boolean/0-1 patch whose pixel (0, 0) is level-0 pixel (x0, y0)."""
    pixels = mask.view(np.uint8) if mask.dtype == bool else mask
    moments = cv2.moments(pixels, binaryImage=True)
    area = moments["m00"]
    centroid = (float(moments["m10"] / area + x0), float(moments["m01"] / area + y0))
    left, top, width, height = cv2.boundingRect(pixels)  # of the non-zero pixels
    bbox = (int(x0 + left), int(y0 + top), int(x0 + left + width), int(y0 + top + height))
    return bbox, centroid, int(area)


def _traced_outline(padded: np.ndarray, x0: int, y0: int, epsilon: float = OUTLINE_EPSILON) -> np.ndarray:
    """The outer contour of the largest piece of a 0/1 patch with one pixel of background around it
    (``padded[1, 1]`` is level-0 pixel (x0, y0)), simplified."""
    traced, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0 - 1, y0 - 1))
    if len(traced) > 1:
        traced = sorted(traced, key=lambda c: (-cv2.contourArea(c), -len(c)))
    return simplify_outline(traced[0].reshape(-1, 2), epsilon)


# ------------------------------------------------------------------------------------------------ GeoJSON

class _FeatureSizeGuard:
    """A binary file whose reads count the bytes parsed since the last feature was handed out, so that
    one feature of gigabytes is refused while it is parsed, before it is built in memory."""

    def __init__(self, handle: BinaryIO, display_name: str):
        self.handle, self.display_name = handle, display_name
        self.since_feature = 0
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.since_feature += len(data)
        if self.since_feature > limits.MAX_FEATURE_BYTES + 2 * max(size, 0):
            raise SlideNucleiError(self.display_name, f"feature #{self.position}: over MAX_FEATURE_BYTES "
                                                      f"({limits.MAX_FEATURE_BYTES} bytes of JSON) in one feature")
        return data


def _top_level(handle: BinaryIO, display_name: str) -> str:
    """The ijson prefix of the features: ``item`` for a bare array (as QuPath writes), ``features.item``
    for a FeatureCollection, ``""`` for a single Feature. Reads only the start of the file."""
    import ijson

    head = handle.read(64).lstrip()
    handle.seek(0)
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head.startswith(b"["):
        return "item"
    if not head.startswith(b"{"):
        raise SlideNucleiError(display_name, "not GeoJSON (expected a FeatureCollection or a list of Features)")
    kind = None
    try:
        for prefix, event, value in ijson.parse(handle):
            if prefix == "type" and event == "string":
                kind = value
                if kind not in ("FeatureCollection", "Feature"):
                    break
            elif prefix == "features" and event == "start_array":
                kind = "FeatureCollection"
                break
            elif prefix == "" and event == "end_map":
                break
            if kind == "Feature":
                break
    except ijson.JSONError as exc:
        raise SlideNucleiError(display_name, f"not valid JSON ({_first_line(exc)})") from None
    finally:
        handle.seek(0)
    if kind == "FeatureCollection":
        return "features.item"
    if kind == "Feature":
        return ""
    found = f"a JSON object of type {kind!r}" if kind else "a JSON object without a GeoJSON type"
    raise SlideNucleiError(display_name, f"not GeoJSON features ({found}; expected a FeatureCollection or a "
                                         "list of Features)")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _iter_features(path: str | Path, display_name: str) -> Iterator[tuple[int, dict]]:
    """(position, feature) of every feature, streamed."""
    import ijson

    path = Path(path)
    if not path.is_file():
        raise SlideNucleiError(display_name, "no such file")
    with open(path, "rb") as raw:
        prefix = _top_level(raw, display_name)
        guarded = _FeatureSizeGuard(raw, display_name)
        position = 0
        try:
            for feature in ijson.items(guarded, prefix, use_float=True, buf_size=64 * 1024):
                if position >= limits.MAX_SLIDE_NUCLEI:
                    raise SlideNucleiError(display_name, f"over MAX_SLIDE_NUCLEI ({limits.MAX_SLIDE_NUCLEI}) features")
                if not isinstance(feature, dict):
                    raise SlideNucleiError(display_name, f"feature #{position}: not a GeoJSON Feature object")
                yield position, feature
                position += 1
                guarded.since_feature = 0
                guarded.position = position
        except ijson.JSONError as exc:
            raise SlideNucleiError(display_name, f"not valid JSON after feature #{position - 1} "
                                                 f"({_first_line(exc)})" if position else
                                   f"not valid JSON ({_first_line(exc)})") from None


def _properties(feature: dict, display_name: str, where: str) -> dict:
    properties = feature.get("properties")
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise SlideNucleiError(display_name, f"{where}: properties must be an object")
    return properties


def _class_name(properties: dict, display_name: str, where: str) -> str | None:
    """The feature's class name (mlcore.readers._common.qupath_class_name: every form QuPath writes)."""
    from mlcore.readers._common import qupath_class_name

    try:
        return qupath_class_name(properties.get("classification"))
    except ValueError as exc:
        raise SlideNucleiError(display_name, f"{where}: {exc}") from None


def _measurements(properties: dict, display_name: str, where: str) -> dict[str, float]:
    """A dict {name: value} (QuPath 0.4+) or a list of {name, value} (earlier versions); values that are not
    finite numbers (QuPath's NaN, null) are left out."""
    raw = properties.get("measurements")
    if raw is None:
        return {}
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list):
        items = []
        for entry in raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise SlideNucleiError(display_name, f"{where}: measurements as a list must hold {{name, value}} objects")
            items.append((entry["name"], entry.get("value")))
    else:
        raise SlideNucleiError(display_name, f"{where}: measurements must be an object or a list of {{name, value}}")
    result = {}
    for name, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            result[str(name)] = float(value)
    return result


def _largest_polygon(geometry: Any, display_name: str, where: str) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """The outer ring and holes of the polygon (of a MultiPolygon: the one with the largest outer ring)."""
    if not isinstance(geometry, dict):
        raise SlideNucleiError(display_name, f"{where}: no geometry")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        polygons = [coordinates]
    elif kind == "MultiPolygon":
        polygons = coordinates
    else:
        raise SlideNucleiError(display_name, f"{where}: geometry type {kind!r} is not supported "
                                             "(nuclei need Polygon or MultiPolygon)")
    if not isinstance(polygons, list):
        raise SlideNucleiError(display_name, f"{where}: malformed {kind} coordinates")
    best, best_area, vertices = None, -1.0, 0
    try:
        for polygon in polygons:
            if not isinstance(polygon, list):
                raise TypeError
            rings = []
            for ring in polygon:
                vertices += len(ring)
                if vertices > limits.MAX_POLYGON_VERTICES:
                    raise SlideNucleiError(display_name, f"{where}: over MAX_POLYGON_VERTICES "
                                                         f"({limits.MAX_POLYGON_VERTICES}) vertices")
                array = np.asarray(ring, dtype=np.float64)
                if array.ndim != 2 or array.shape[1] < 2:
                    raise ValueError
                rings.append(array[:, :2])
            if not rings or not len(rings[0]):
                continue
            outer = rings[0]
            if len(polygons) == 1:
                return outer, rings[1:]
            x, y = outer[:, 0], outer[:, 1]
            area = abs(float(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]))
            if area > best_area:
                best, best_area = (outer, rings[1:]), area
    except SlideNucleiError:
        raise
    except (TypeError, ValueError, IndexError):
        raise SlideNucleiError(display_name, f"{where}: malformed {kind} coordinates") from None
    return best


def _polygon_nucleus(outer: np.ndarray, holes: list[np.ndarray], display_name: str, where: str,
                     class_name: str | None, measurements: dict[str, float]) -> SlideNucleus | None:
    from mlcore.readers._common import polygon_mask

    if not np.all(np.isfinite(outer)):
        raise SlideNucleiError(display_name, f"{where}: polygon coordinates are not finite numbers")
    low, high = outer.min(axis=0), outer.max(axis=0)
    if float((high - low).max()) > limits.MAX_NUCLEUS_EXTENT:
        raise SlideNucleiError(display_name, f"{where}: a polygon of {high[0] - low[0]:.0f} x {high[1] - low[1]:.0f} "
                                             f"pixels is no nucleus (over MAX_NUCLEUS_EXTENT, "
                                             f"{limits.MAX_NUCLEUS_EXTENT} pixels)")
    try:
        painted = polygon_mask([(outer, holes)], _FAR, _FAR, display_name, where)
    except DataError as exc:
        raise SlideNucleiError(display_name, exc.problem) from None
    if painted is None:
        return None  # wholly left of or above the slide
    (rows, cols), patch = painted
    if not patch.any():
        return None  # its holes cover it
    bbox, centroid, area = _mask_measures(patch, cols.start, rows.start)
    # The outline runs through the boundary pixels' centres: the polygon moved to pixel-centre coordinates,
    # each vertex rounded toward the nucleus's centre, so that the square [10, 30] (QuPath's pixels 10..29) is
    # the centres 10..29, which written back (+ 0.5) fill the same pixels. Integers stay: an outline written
    # here comes back to the same vertices.
    centred = outer - _HALF_PIXEL
    inward = np.where(centred > np.asarray(centroid), np.floor(centred), np.ceil(centred))
    outline = simplify_outline(inward.clip(-_FAR, _FAR).astype(np.int64))
    return SlideNucleus(outline=outline, bbox=bbox, centroid=centroid, area=area, class_name=class_name,
                        measurements=measurements)


def iter_geojson_nuclei(path: str | Path, display_name: str | None = None,
                        skipped: dict | None = None) -> Iterator[SlideNucleus]:
    """The nuclei of a QuPath GeoJSON export (a FeatureCollection, or a bare list of Features as QuPath
    writes), streamed with ijson: memory holds one feature at a time whatever the file size.

    Each Polygon or MultiPolygon feature is one nucleus (of a MultiPolygon, its largest polygon); QuPath
    cells (``objectType: "cell"``) give their ``nucleusGeometry``. Annotations and TMA cores exported with
    the detections are skipped, and so is a polygon wholly outside the slide (left of or above it). Raises
    :class:`SlideNucleiError` naming ``display_name`` (default: the file's name) and the feature. ``skipped``,
    when given, counts the features left out by their object type ({"annotation": 19}), so that a file of
    annotations only can be told from an empty one.
    """
    display_name = display_name or Path(path).name
    for position, feature in _iter_features(path, display_name):
        where = f"feature #{position}"
        properties = _properties(feature, display_name, where)
        object_type = properties.get("objectType", feature.get("objectType"))
        if isinstance(object_type, str) and object_type.lower() in QUPATH_NOT_NUCLEI:
            if skipped is not None:
                skipped[object_type.lower()] = skipped.get(object_type.lower(), 0) + 1
            continue
        geometry = feature.get("nucleusGeometry") or properties.get("nucleusGeometry") or feature.get("geometry")
        polygon = _largest_polygon(geometry, display_name, where)
        if polygon is None:
            continue
        nucleus = _polygon_nucleus(polygon[0], polygon[1], display_name, where,
                                   _class_name(properties, display_name, where),
                                   _measurements(properties, display_name, where))
        if nucleus is not None:
            yield nucleus


def inside_slide(nuclei: Iterable[SlideNucleus], width: int, height: int,
                 counts: dict | None = None) -> Iterator[SlideNucleus]:
    """The nuclei that reach into a ``width`` x ``height`` slide. A detections file is read without its slide
    (the readers leave out only what lies wholly left of or above pixel 0); a nucleus wholly right of or below
    the slide (another slide's detections, an offset export) has no tissue to classify and is left out here,
    counted in ``counts["outside"]``."""
    counts = counts if counts is not None else {}
    counts.setdefault("outside", 0)
    for nucleus in nuclei:
        if nucleus.bbox[0] >= width or nucleus.bbox[1] >= height:
            counts["outside"] += 1
            continue
        yield nucleus


def geojson_class_names(path: str | Path, display_name: str | None = None) -> list[str]:
    """The class names of a GeoJSON export's nuclei, in order of first appearance (one streamed pass; the
    geometry is not rasterised)."""
    display_name = display_name or Path(path).name
    seen: dict[str, None] = {}
    for position, feature in _iter_features(path, display_name):
        where = f"feature #{position}"
        properties = _properties(feature, display_name, where)
        object_type = properties.get("objectType", feature.get("objectType"))
        if isinstance(object_type, str) and object_type.lower() in QUPATH_NOT_NUCLEI:
            continue
        name = _class_name(properties, display_name, where)
        if name is not None and name not in seen:
            problem = name_problem(name)   # here, where the feature is known, not later in the label set
            if problem:
                raise SlideNucleiError(display_name, f"{where}: class name {quoted(name[:80])} {problem}")
            seen[name] = None
    return list(seen)


def _dumps():
    try:
        import orjson

        return lambda value: orjson.dumps(value)
    except ImportError:  # orjson is pinned for the web app; mlcore alone works without it
        import json

        return lambda value: json.dumps(value, separators=(",", ":")).encode()


def geojson_feature(nucleus: SlideNucleus, class_name: str | None, color: tuple[int, int, int] | None) -> dict:
    """One QuPath detection: the outline in pixel-edge coordinates (a closed ring of at least 4 positions),
    the classification's name and colour (``color`` [r, g, b] as QuPath 0.4 reads it, ``colorRGB`` packed
    as earlier versions do), and the measurements."""
    ring = (nucleus.outline.astype(np.float64) + _HALF_PIXEL).tolist()
    ring.append(ring[0])
    while len(ring) < 4:  # a one- or two-pixel outline: GeoJSON wants four positions
        ring.append(ring[0])
    properties: dict[str, Any] = {"objectType": "detection"}
    if class_name is not None:
        classification: dict[str, Any] = {"name": class_name}
        if color is not None:
            r, g, b = (int(c) for c in color)
            classification["color"] = [r, g, b]
            classification["colorRGB"] = ((0xFF << 24) | (r << 16) | (g << 8) | b) - (1 << 32)  # signed ARGB
        properties["classification"] = classification
    if nucleus.measurements:
        properties["measurements"] = dict(nucleus.measurements)
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": properties}


def write_geojson_nuclei(path: str | Path,
                         nuclei: Iterable[tuple[SlideNucleus, str | None, tuple[int, int, int] | None]]) -> int:
    """Write a FeatureCollection of QuPath detections, one feature at a time (the nuclei may come from a
    generator of any length). Each item is (nucleus, class name or None, colour or None). Returns the
    number of features written. Files written here read back with :func:`iter_geojson_nuclei` to the
    same outlines, classes and measurements."""
    dumps = _dumps()
    count = 0
    with open(path, "wb") as handle:
        handle.write(b'{"type":"FeatureCollection","features":[')
        for nucleus, class_name, color in nuclei:
            handle.write(b"\n" if count == 0 else b",\n")
            handle.write(dumps(geojson_feature(nucleus, class_name, color)))
            count += 1
        handle.write(b"\n]}\n")
    return count


# -------------------------------------------------------------------------------------- instance-mask TIFF

_STRIP_PIXELS = 16 * 1024 * 1024  # pixels of one strip read at a time (64 MiB of uint32 labels)


def _mask_strips(path: Path, display_name: str) -> Iterator[tuple[int, np.ndarray, bool]]:
    """(top row, labels, is the last strip) of level 0 of a label TIFF, a few rows of tiles (or strips) at a
    time, decoded segment by segment: the whole mask is never in memory."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise SlideNucleiError(display_name, f"not a TIFF file ({_first_line(exc).replace(str(path), path.name)})") from None
    with tif:
        try:
            page = tif.series[0].levels[0].keyframe
        except (IndexError, AttributeError, ValueError):
            raise SlideNucleiError(display_name, "a TIFF without an image") from None
        shape = tuple(page.shape)
        if len(shape) == 3 and shape[2] == 1:
            shape = shape[:2]
        if len(shape) != 2 or page.samplesperpixel != 1:
            raise SlideNucleiError(display_name, f"an instance mask must be one channel of integer labels, "
                                                 f"got an image of shape {tuple(page.shape)}")
        if np.dtype(page.dtype).kind not in "iu" or np.dtype(page.dtype).itemsize > 4:
            raise SlideNucleiError(display_name, f"an instance mask must hold integer labels of at most 32 bits, "
                                                 f"got {np.dtype(page.dtype).name}")
        height, width = shape
        if page.is_tiled:
            chunk_rows, chunk_cols = page.tilelength, page.tilewidth
        else:
            chunk_rows, chunk_cols = min(page.rowsperstrip or height, height), width
        across = -(-width // chunk_cols)
        down = -(-height // chunk_rows)
        if len(page.dataoffsets) < across * down:
            raise SlideNucleiError(display_name, "a multi-plane or truncated TIFF, not one instance mask")
        if chunk_rows * chunk_cols * across > 4 * _STRIP_PIXELS:
            raise SlideNucleiError(display_name, f"tiles or strips of {chunk_cols} x {chunk_rows} pixels are too "
                                                 "large to read in pieces; write the mask as a tiled TIFF")
        rows_per_read = max(1, _STRIP_PIXELS // (chunk_rows * across * chunk_cols))
        handle = tif.filehandle
        for first in range(0, down, rows_per_read):
            last_row = min(down, first + rows_per_read)
            top = first * chunk_rows
            strip = np.zeros(((last_row - first) * chunk_rows, across * chunk_cols), np.dtype(page.dtype))
            for chunk_row in range(first, last_row):
                for chunk_col in range(across):
                    index = chunk_row * across + chunk_col
                    offset, count = page.dataoffsets[index], page.databytecounts[index]
                    if not count:
                        continue  # a tile that was never written is background
                    handle.seek(offset)
                    try:
                        segment = page.decode(handle.read(count), index, jpegtables=page.jpegtables)[0]
                    except Exception as exc:  # the codecs raise their own types on corrupt data
                        raise SlideNucleiError(display_name, f"corrupt tile {index} "
                                                             f"({_first_line(exc)})") from None
                    if segment is None:
                        continue
                    segment = np.asarray(segment).reshape(-1, chunk_cols)[:chunk_rows]
                    y = (chunk_row - first) * chunk_rows
                    x = chunk_col * chunk_cols
                    strip[y:y + segment.shape[0], x:x + chunk_cols] = segment
            yield top, strip[:max(0, min(strip.shape[0], height - top)), :width], last_row == down


def _patch_nucleus(patch: np.ndarray, x0: int, y0: int, epsilon: float = OUTLINE_EPSILON,
                   class_name: str | None = None) -> SlideNucleus:
    """A nucleus from its boolean mask on its bounding box, whose pixel (0, 0) is level-0 (x0, y0)."""
    padded = np.zeros((patch.shape[0] + 2, patch.shape[1] + 2), np.uint8)
    padded[1:-1, 1:-1] = patch
    bbox, centroid, area = _mask_measures(padded[1:-1, 1:-1], x0, y0)
    return SlideNucleus(outline=_traced_outline(padded, x0, y0, epsilon), bbox=bbox, centroid=centroid, area=area,
                        class_name=class_name)


def nuclei_from_instance_map(instance_map: np.ndarray, x_offset: int = 0, y_offset: int = 0,
                             classes: dict[int, str] | None = None,
                             epsilon: float = OUTLINE_EPSILON) -> Iterator[tuple[int, SlideNucleus]]:
    """(instance id, nucleus) of every instance of an in-memory instance map (a tile at level-0 offset
    (x_offset, y_offset)), in id order, with the geometry :func:`iter_mask_nuclei` gives; ``classes``
    names their classes by id. ``epsilon=0`` keeps every corner of the traced outlines (a GeoJSON that
    rasterises back to the same pixels)."""
    from scipy import ndimage

    labels = np.asarray(instance_map)
    if labels.size == 0 or labels.max(initial=0) <= 0:
        return
    classes = classes or {}
    for index, found in enumerate(ndimage.find_objects(labels)):
        if found is not None:
            rows, cols = found
            yield index + 1, _patch_nucleus(labels[rows, cols] == index + 1, x_offset + cols.start,
                                            y_offset + rows.start, epsilon, classes.get(index + 1))


def iter_mask_nuclei(mask_tiff_path: str | Path, display_name: str | None = None) -> Iterator[SlideNucleus]:
    """The nuclei of an instance-label mask stored as a (tiled, possibly pyramidal) TIFF: level 0, 0 =
    background, one integer id per nucleus. Read a strip of tile rows at a time; a nucleus that reaches the
    bottom of a strip is carried (its rows only) into the next one, so it comes back whole. Memory is a
    strip plus the carried rows, whatever the slide's size.

    Nuclei come in strip order (by their bottom row, then id). The pixels of one id that touch or overlap
    vertically form one nucleus, as on a tile; an id reused far below, with rows of background between,
    gives a second nucleus. Raises :class:`SlideNucleiError` naming ``display_name``.
    """
    from scipy import ndimage

    path = Path(mask_tiff_path)
    display_name = display_name or path.name
    if not path.is_file():
        raise SlideNucleiError(display_name, "no such file")
    carry: np.ndarray | None = None
    carry_top = 0
    count = 0
    for top, strip, last in _mask_strips(path, display_name):
        if carry is not None:
            buffer = np.concatenate([carry, strip.astype(carry.dtype, copy=False)])
            origin = carry_top
        else:
            buffer, origin = strip, top
        carry = None
        foreground = buffer != 0
        ids = buffer[foreground]
        if ids.size == 0:
            continue
        if ids.dtype.kind == "i" and ids.min() < 0:
            raise SlideNucleiError(display_name, f"negative instance id {int(ids.min())} near row {origin}")
        # Local labels 1..n for the ids of this strip: find_objects sizes its answer by the largest label.
        unique_ids, inverse = np.unique(ids, return_inverse=True)
        local = np.zeros(buffer.shape, np.int32)
        local[foreground] = inverse.reshape(-1).astype(np.int32) + 1
        del foreground, ids, inverse
        open_labels = np.zeros(len(unique_ids) + 1, bool)
        open_top = buffer.shape[0]
        for index, (rows, cols) in enumerate(ndimage.find_objects(local)):
            label = index + 1
            if not last and rows.stop == buffer.shape[0]:
                open_labels[label] = True  # it may go on in the next strip
                open_top = min(open_top, rows.start)
                continue
            count += 1
            if count > limits.MAX_SLIDE_NUCLEI:
                raise SlideNucleiError(display_name, f"over MAX_SLIDE_NUCLEI ({limits.MAX_SLIDE_NUCLEI}) nuclei")
            if max(rows.stop - rows.start, cols.stop - cols.start) > limits.MAX_NUCLEUS_EXTENT:
                raise SlideNucleiError(display_name, f"instance {int(unique_ids[index])} spans "
                                                     f"{cols.stop - cols.start} x {rows.stop - rows.start} pixels: no "
                                                     f"nucleus (over MAX_NUCLEUS_EXTENT, {limits.MAX_NUCLEUS_EXTENT})")
            yield _patch_nucleus(local[rows, cols] == label, cols.start, origin + rows.start)
        if open_labels.any():
            if buffer.shape[0] - open_top > limits.MAX_NUCLEUS_EXTENT:
                tall = int(unique_ids[np.flatnonzero(open_labels)[0] - 1])
                raise SlideNucleiError(display_name, f"instance {tall} spans over {limits.MAX_NUCLEUS_EXTENT} rows: "
                                                     f"no nucleus (MAX_NUCLEUS_EXTENT)")
            kept = local[open_top:]
            carry = np.where(open_labels[kept], buffer[open_top:], 0).astype(buffer.dtype, copy=False)
            carry_top = origin + open_top


def write_label_tiff(path: str | Path, labels: np.ndarray | Iterable[np.ndarray], shape: tuple[int, int] | None = None,
                     tile: int = 256, mpp: float | None = None) -> Path:
    """Write an instance-label mask as a tiled uint32 TIFF (zlib), from an array or from an iterator of
    ``tile x tile`` tiles in row-major order (then ``shape`` = (height, width) is required, and the mask is
    never whole in memory). The inverse of :func:`iter_mask_nuclei`."""
    import tifffile

    path = Path(path)
    if isinstance(labels, np.ndarray):
        data, shape = np.ascontiguousarray(labels, dtype=np.uint32), labels.shape
    elif shape is None:
        raise ValueError("write_label_tiff: shape is required for tiles from an iterator")
    else:
        data = (np.ascontiguousarray(t, dtype=np.uint32) for t in labels)
    resolution = {}
    if mpp:
        resolution = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=shape[0] * shape[1] * 4 > 2**31) as tif:
        tif.write(data, shape=tuple(shape), dtype=np.uint32, tile=(tile, tile), compression="zlib",
                  photometric="minisblack", metadata=None, **resolution)
    return path
