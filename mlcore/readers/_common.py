"""Helpers shared by the format readers: image loading, validation and the per-format source shape."""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from mlcore import limits
from mlcore.types import MISSING, AnnotatedImage, DataError, LabelSet, default_colors, name_problem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# The only exceptions that NumPy, SciPy, Pillow and json raise on bad content; anything else is a bug
# in our code and must keep its traceback.
CONTENT_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, EOFError)

# Pillow warns above its limit and refuses above twice it; read_rgb turns the warning into an error, so
# Pillow's guard refuses exactly what MAX_IMAGE_PIXELS does (read_rgb checks the header size itself too).
Image.MAX_IMAGE_PIXELS = limits.MAX_IMAGE_PIXELS


@dataclass
class FormatSource:
    """What a format module hands to :mod:`mlcore.readers`: the label set and a lazy list of images.

    ``items`` are format-specific keys (file stems, COCO image records...); ``read_item`` turns one into
    an :class:`AnnotatedImage`, so callers can stream a large dataset one image at a time.
    """

    label_set: LabelSet | None
    items: Sequence[Any]
    read_item: Callable[[Any], AnnotatedImage]
    item_path: Callable[[Any], Path]


@contextmanager
def _opened_image(path: Path):
    """The image at ``path`` open in Pillow, its header read and its size checked against MAX_IMAGE_PIXELS; a
    decompression bomb, or a file Pillow cannot identify, is a DataError naming the file."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a web upload must not get that far.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only, and refuses a decompression bomb
                check_pixels(image.size[1], image.size[0], path, "image")
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(path, f"image too large to read safely: over MAX_IMAGE_PIXELS "
                              f"({limits.megapixels(limits.MAX_IMAGE_PIXELS)})") from None
    except UnidentifiedImageError:
        raise DataError(path, "not an image (Pillow cannot identify the file)") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB, with Pillow's decompression-bomb guard kept on.

    EXIF orientation is deliberately not applied: masks are stored in the file's pixel order.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        with _opened_image(path) as image:
            if image.format == "PNG" and _is_8bit_rgb_png(path) and "transparency" not in image.info:
                rgb = _decode_with_opencv(path, image.size)
                if rgb is not None:
                    return rgb
            image.load()
            return _to_rgb(image, path)
    except DataError:
        raise   # (a ValueError too: it was wrapped again as "corrupt image: <the server's path>: ...")
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt image data
        raise DataError(path, f"corrupt image: {exc}") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file from its header alone, checked as :func:`read_rgb` checks it: a
    request can refuse what its job would fail on without decoding the pixels."""
    path = Path(path)
    try:
        with _opened_image(path) as image:
            return image.size[1], image.size[0]
    except OSError as exc:
        raise DataError(path, f"not a readable image: {exc}") from None


def _is_8bit_rgb_png(path: Path) -> bool:
    """An 8-bit truecolour PNG without alpha (IHDR bit depth 8, colour type 2)."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    return len(header) == 26 and header[12:16] == b"IHDR" and header[24] == 8 and header[25] == 2


def _decode_with_opencv(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The same pixels as Pillow for a plain RGB PNG (lossless), decoded in about 2/3 of the time;
    None when OpenCV cannot decode it, so that Pillow reports the problem."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.shape[:2] != (size[1], size[0]):
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        # Pillow's RGB conversion clips 16-bit values at 255; keep the high byte instead.
        grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("P", "PA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")  # resolve the palette before dropping alpha
    rgb = np.asarray(image.convert("RGB"))
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(path, f"cannot convert image mode {image.mode} to RGB")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def find_image(folder: Path, stem: str) -> Path | None:
    """The image file ``<folder>/<stem>.<png|jpg|...>``, or None."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / (stem + suffix), folder / (stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name (natural order is left to the caller)."""
    if not folder.is_dir():
        raise DataError(folder, "image folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_pixels(height: int, width: int, path: Path, what: str) -> None:
    """Refuse an image or mask larger than MAX_IMAGE_PIXELS, from its declared size (nothing allocated)."""
    pixels = int(height) * int(width)
    if pixels > limits.MAX_IMAGE_PIXELS:
        raise DataError(path, f"{what} too large: {width}x{height} ({limits.megapixels(pixels)}) is over the limit "
                              f"MAX_IMAGE_PIXELS ({limits.megapixels(limits.MAX_IMAGE_PIXELS)})")


def check_array_bytes(nbytes: int, path: Path, what: str) -> None:
    if nbytes > limits.MAX_ARRAY_BYTES:
        raise DataError(path, f"{what} would take {nbytes / 2**20:.0f} MiB, over the limit "
                              f"MAX_ARRAY_BYTES = {limits.MAX_ARRAY_BYTES} bytes")


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, "file not found")
    size = path.stat().st_size
    if size > limits.MAX_JSON_BYTES:
        raise DataError(path, f"JSON file of {size / 2**20:.0f} MiB is over the limit MAX_JSON_BYTES = "
                              f"{limits.MAX_JSON_BYTES} bytes")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise DataError(path, "not valid JSON: not UTF-8 text") from None


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header alone, checked against the bytes the file holds."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            data_bytes = path.stat().st_size - handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise DataError(path, f"not a readable NumPy .npy array: {exc}") from None
    if dtype.hasobject:
        raise DataError(path, "a .npy array of Python objects is not accepted (it could run code)")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > data_bytes:
        raise DataError(path, f"the .npy header declares shape {shape} of {dtype} ({declared} bytes) but the file "
                              f"holds {data_bytes} bytes of data")
    return tuple(int(n) for n in shape), dtype


def load_npy(path: Path, mmap: bool = False, mask: bool = False) -> np.ndarray:
    """A ``.npy`` array, its size checked from the header first: a ``mask`` (H x W, or H x W x 1) against
    MAX_IMAGE_PIXELS, anything else read whole against MAX_ARRAY_BYTES (a memory map is not read whole)."""
    shape, dtype = npy_header(path)
    if mask:
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 1):
            raise DataError(path, f"instance mask must be a 2-D H x W array, got shape {shape}")
        check_pixels(shape[0], shape[1], path, "instance mask")
    elif not mmap:
        check_array_bytes(int(np.prod(shape, dtype=object)) * dtype.itemsize, path, f"array of shape {shape}")
    try:
        # allow_pickle stays off: a pickled object array could run code.
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable NumPy .npy array: {exc}") from None


def as_instance_map(array: np.ndarray, path: Path) -> np.ndarray:
    """Validate an instance map (2-D, integer-valued, non-negative) and return it as int32."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise DataError(path, f"instance mask must be a 2-D H x W array, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.int32)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(path, "instance mask has non-integer values")
    elif not np.issubdtype(array.dtype, np.integer):
        raise DataError(path, f"instance mask must hold integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise DataError(path, f"instance mask has negative ids (min {array.min()})")
    if array.size and array.max() > np.iinfo(np.int32).max:
        raise DataError(path, f"instance ids exceed int32 (max {array.max()})")
    return np.ascontiguousarray(array, dtype=np.int32)


def as_int_array(array: Any, path: Path, what: str) -> np.ndarray:
    """An integer array from integer or integral-float input, else DataError."""
    array = np.asarray(array)
    if array.size == 0:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise DataError(path, f"{what} has non-integer values")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise DataError(path, f"{what} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def check_same_size(image: np.ndarray, instance_map: np.ndarray, mask_path: Path, image_path: Path) -> None:
    if instance_map.shape != image.shape[:2]:
        raise DataError(mask_path, f"mask size {instance_map.shape[1]}x{instance_map.shape[0]} differs from "
                                   f"image size {image.shape[1]}x{image.shape[0]} of {image_path.name}")


def instance_ids(instance_map: np.ndarray) -> np.ndarray:
    """Sorted ids of the instances present (background 0 excluded), never sized by the largest id."""
    if instance_map.size and int(instance_map.max()) > instance_map.size:
        ids = np.unique(instance_map)  # sparse ids (up to 2**31 - 1): sort, do not count
        return ids[ids > 0].astype(np.int64)
    counts = np.bincount(instance_map.ravel())
    ids = np.flatnonzero(counts)
    return ids[ids > 0]


def bounded_ids(image: AnnotatedImage) -> AnnotatedImage:
    """Renumber an image's instances 1..N in id order when its largest id exceeds its pixel count.

    Everything after the reader (crops, outlines, storage) may size arrays by the largest id; this keeps
    that below the pixel count, itself bounded by MAX_IMAGE_PIXELS. Dense ids are kept as they are.
    """
    instance_map = image.instance_map
    if not instance_map.size or int(instance_map.max()) <= instance_map.size:
        return image
    ids, compact = np.unique(instance_map, return_inverse=True)
    offset = 0 if ids[0] == 0 else 1  # background 0 stays 0
    new_id = {int(old): index + offset for index, old in enumerate(ids.tolist())}
    instance_map = (compact.reshape(instance_map.shape) + offset).astype(np.int32)
    classes = {new_id[old]: c for old, c in image.classes.items() if old in new_id}
    return dataclasses.replace(image, instance_map=instance_map, classes=classes)


def checked_classes(pairs: np.ndarray, instance_map: np.ndarray, label_set: LabelSet, path: Path) -> dict[int, int]:
    """Turn an N x 2 (instance id, class index) table into a classes dict, checking every row.

    A class index of ``MISSING`` (-1) marks an instance as explicitly unlabelled.
    """
    pairs = as_int_array(pairs, path, "types table")
    if pairs.size == 0:
        return {}
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise DataError(path, f"types must be an N x 2 array (instance id, class index), got shape {pairs.shape}")
    present = instance_ids(instance_map)
    absent = pairs[~np.isin(pairs[:, 0], present), 0]
    if absent.size:
        raise DataError(path, f"types refer to instance(s) not in the mask: {_few(absent)}")
    bad = pairs[(pairs[:, 1] < MISSING) | (pairs[:, 1] >= len(label_set)), 1]
    if bad.size:
        raise DataError(path, f"class index outside the label set {list(label_set.classes)} "
                              f"(valid 0..{len(label_set) - 1}): {_few(bad)}")
    ids, first = np.unique(pairs[:, 0], return_index=True)
    if ids.size != len(pairs):
        repeated = np.setdiff1d(np.arange(len(pairs)), first)
        raise DataError(path, f"instance id(s) listed twice in the types: {_few(pairs[repeated, 0])}")
    return {int(i): int(c) for i, c in pairs if c != MISSING}


def _few(values: Iterable, limit: int = 8) -> str:
    values = [int(v) for v in np.asarray(list(values)).ravel()]
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def make_label_set(name: str, names: Sequence[str], colors: Sequence[Any] | None, path: Path | None) -> LabelSet:
    """A LabelSet from names and optional colours, with LabelSet's own checks turned into DataError."""
    names = [str(n) for n in names]
    for class_name in names:
        if (problem := name_problem(class_name)) is not None:
            raise DataError(path, f"class name {class_name[:40]!r}{'...' if len(class_name) > 40 else ''} {problem}")
    rgb: tuple = ()
    if colors is not None and any(c is not None for c in colors):
        palette = default_colors(len(names))
        rgb = tuple(parse_color(c, path) if c is not None else palette[i] for i, c in enumerate(colors))
    try:
        return LabelSet(name, tuple(names), rgb)
    except ValueError as exc:
        raise DataError(path, str(exc)) from None


def parse_color(value: Any, path: Path | None) -> tuple[int, int, int]:
    """[r, g, b] or a packed (A)RGB integer (QuPath's ``colorRGB``) -> (r, g, b)."""
    if isinstance(value, bool):
        raise DataError(path, f"invalid colour {value!r}")
    if isinstance(value, int):
        value &= 0xFFFFFF  # QuPath packs alpha in the (signed) top byte
        return (value >> 16) & 255, (value >> 8) & 255, value & 255
    if isinstance(value, (list, tuple)) and len(value) in (3, 4) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 255 for v in value[:3]):
        return int(value[0]), int(value[1]), int(value[2])
    raise DataError(path, f"invalid colour {value!r} (expected [r, g, b] in 0..255 or a packed RGB integer)")


def check_class_names(class_names: Sequence[str] | None, expected: int | None, path: Path, source: str) -> None:
    """An explicit ``class_names`` override must name every class the files define."""
    if class_names is None or expected is None:
        return
    if len(class_names) != expected:
        raise DataError(path, f"{len(class_names)} class names given ({list(class_names)}) but {source} "
                              f"defines {expected} classes")


_PATCH_NAME = re.compile(r"^(.+_\d+)_\d+$")


def tile_group(name: str) -> str:
    """Split group of a patch name: ``<prefix>_<tile>_<k>`` -> ``<prefix>_<tile>``, else the name itself.

    HoVer-Net/CoNSeP patches (``train_18_011``) are cut with overlapping borders from one tile; grouping
    them by tile keeps a tile's patches on one side of a train/validation split.
    """
    match = _PATCH_NAME.match(name)
    return match.group(1) if match else name


def unique_stems(paths: Sequence[Path]) -> None:
    """Two files with one stem (a.png and a.jpg) would make the matching mask ambiguous."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise DataError(path, f"two images share the name {path.stem!r} ({seen[path.stem].name} and {path.name})")
        seen[path.stem] = path


# Polygons in COCO and QuPath GeoJSON use pixel-edge coordinates (pixel (0, 0) covers [0, 1) x [0, 1)), QuPath's
# and pycocotools' convention (pycocotools approximates it on a finer grid: a float polygon's border pixels may
# come out otherwise there): a pixel belongs to a polygon when its centre (x + 0.5, y + 0.5) lies inside it. A
# centre exactly on the polygon counts too, so that an outline through the centres of the boundary pixels (the
# stored outlines, shifted by half a pixel, and this program's exports before pixel-edge rings) comes back to
# the same pixels; an exact pixel-edge ring never passes through a centre.
_MAX_COORDINATE = 1e7  # beyond any slide
# A nucleus outline has tens to hundreds of vertices; a crafted annotation of a few MB must not hold an import's
# worker (the fill below costs rows x vertices): longer rings are refused.
MAX_RING_VERTICES = 4096
_FILL_CELLS = 1 << 20  # rows x edges, and rows x columns, worked on at once: the fill's arrays stay about 8 MB each


# QuPath objects that are not nuclei, exported with the detections when "all objects" are exported (the tile and
# the slide readers skip them).
QUPATH_NOT_NUCLEI = frozenset({"annotation", "tile", "tma_core", "root"})


def qupath_class_name(classification) -> str | None:
    """A QuPath classification's class name: ``name`` (a derived class of QuPath 0.2/0.3 with its
    ``parentClass`` chain, ``"Tumor: Positive"`` as QuPath shows it), ``names`` (QuPath 0.4+'s derived class,
    joined alike), or a plain string (some converters write that). None for none, or a blank name (some
    converters write "" for "no class"); ValueError for anything else. Shared by the tile and the slide readers."""
    if classification is None:
        return None
    if isinstance(classification, str):
        return classification if classification.strip() else None
    if isinstance(classification, dict):
        name = classification.get("name")
        if isinstance(name, str):
            if not name.strip():
                return None
            parent = qupath_class_name(classification.get("parentClass")) if classification.get("parentClass") else None
            return f"{parent}: {name}" if parent else name
        names = classification.get("names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return ": ".join(names)
    raise ValueError(f"classification must be a name or an object with a name (or QuPath's names), "
                     f"got {str(classification)[:80]!r}")


def polygon_mask(rings: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]], height: int, width: int,
                 path: Path, where: str) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Rasterise polygons (outer ring K x 2 as x, y; holes) into a bounding-box patch of the image.

    A pixel is painted when its centre lies inside or on a polygon and not strictly inside one of its holes
    (even-odd within each polygon; polygons are united). A polygon too small to hold any pixel centre still
    paints the pixel under the mean of its vertices: an annotated nucleus is never dropped for being tiny.
    Returns ``((rows, cols), boolean patch)`` or None when nothing falls inside the image. Only the
    bounding box is allocated, so thousands of nuclei on a large image stay cheap.
    """
    for outer, holes in rings:
        for ring in (outer, *holes):
            if len(ring) > MAX_RING_VERTICES:
                raise DataError(path, f"{where}: a polygon ring of {len(ring):,} vertices; at most "
                                      f"{MAX_RING_VERTICES:,} are read (a nucleus outline has tens to hundreds)")
    polygons = []
    for outer, holes in rings:
        if len(outer):
            polygons.append([_finite_ring(ring, path, where) for ring in (outer, *holes) if len(ring)])
    if not polygons:
        return None
    points = np.concatenate([polygon[0] for polygon in polygons])
    low, high = np.floor(points.min(axis=0)), np.ceil(points.max(axis=0)) - 1
    x0, y0 = max(int(low[0]), 0), max(int(low[1]), 0)
    x1, y1 = min(int(max(high[0], low[0])), width - 1), min(int(max(high[1], low[1])), height - 1)
    if x1 < x0 or y1 < y0:
        return None
    patch = np.zeros((y1 - y0 + 1, x1 - x0 + 1), bool)
    for polygon in polygons:
        painted = _centres_inside(polygon, x0, y0, *patch.shape)
        if not painted.any() and not _centres_inside(polygon[:1], x0, y0, *patch.shape).any():
            x, y = np.floor(polygon[0].mean(axis=0)).astype(np.int64)
            if x0 <= x <= x1 and y0 <= y <= y1:
                painted[y - y0, x - x0] = True
        patch |= painted
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), patch


def _finite_ring(ring, path: Path, where: str) -> np.ndarray:
    ring = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(ring)) or np.abs(ring).max() > _MAX_COORDINATE:
        raise DataError(path, f"{where}: polygon coordinates are not finite numbers in a plausible range")
    return ring


def _centres_inside(rings: list[np.ndarray], x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Pixels of the box at (x0, y0) whose centres lie inside the rings (even-odd) or on them, by scanlines
    through the rows' centres: each ring edge a row's centre line crosses toggles the pixels right of it.
    Rows are filled a block at a time, so that the work arrays stay a few MB whatever the box's size."""
    # In pixel-centre units of the box: pixel (row, col)'s centre is the point (col, row).
    rings = [ring - (x0 + 0.5, y0 + 0.5) for ring in rings]
    ends = [(ring, np.roll(ring, -1, axis=0)) for ring in rings]
    inside = np.zeros((height, width), bool)
    step = max(1, _FILL_CELLS // max(sum(len(ring) for ring in rings), width + 1))
    for first in range(0, height, step):
        count = min(step, height - first)
        centre_y = np.arange(first, first + count, dtype=np.float64)[:, None]
        toggles = np.zeros(count * (width + 1), np.int64)
        for start, end in ends:
            rows, edges = np.nonzero((start[:, 1] <= centre_y) != (end[:, 1] <= centre_y))
            t = (centre_y[rows, 0] - start[edges, 1]) / (end[edges, 1] - start[edges, 1])
            x = start[edges, 0] + t * (end[edges, 0] - start[edges, 0])
            cols = np.clip(np.floor(x) + 1, 0, width).astype(np.int64)
            toggles += np.bincount(rows * (width + 1) + cols, minlength=toggles.size)
            exact = (x == cols - 1) & (cols > 0) & (x < width)
            inside[rows[exact] + first, cols[exact] - 1] = True   # a centre on the ring: marked below as well
        block = (np.cumsum(toggles.reshape(count, width + 1), axis=1)[:, :width] & 1).astype(bool)
        inside[first:first + count] |= block
    for ring, (start, end) in zip(rings, ends):
        on_grid = ring == np.floor(ring)
        if not on_grid.any():
            continue  # a ring along pixel edges, or in general position: no centre lies on it
        # Centres the crossings miss: on a horizontal edge, or at a vertex at the bottom of a ring.
        for edge in np.flatnonzero((start[:, 1] == end[:, 1]) & on_grid[:, 1]):
            row = int(start[edge, 1])
            if 0 <= row < height:
                low, high = sorted((start[edge, 0], end[edge, 0]))
                inside[row, max(int(np.ceil(low)), 0):max(min(int(np.floor(high)) + 1, width), 0)] = True
        vertices = ring[on_grid.all(axis=1)].astype(np.int64)
        vertices = vertices[(vertices >= 0).all(axis=1) & (vertices[:, 0] < width) & (vertices[:, 1] < height)]
        inside[vertices[:, 1], vertices[:, 0]] = True
    return inside


class PaintedNuclei:
    """An image's instance map painted one nucleus at a time, a later one over an earlier one where they overlap,
    counting why a nucleus of the file kept no pixel (:data:`mlcore.types.LEFT_OUT_REASONS`): the tile readers of
    outlines (GeoJSON, COCO, HoVer-Net's JSON) leave those out, and their callers report how many."""

    def __init__(self, height: int, width: int):
        self.instance_map = np.zeros((height, width), np.int32)
        self.left_out: dict[str, int] = {}
        self._painted: list[int] = []   # ids that painted a pixel (a later one may have covered it since)

    def _leave_out(self, reason: str) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + 1

    def paint_rings(self, instance_id: int, rings: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]], path: Path,
                    where: str) -> bool:
        """Paint the pixels of the polygons ``rings`` (:func:`polygon_mask`) as ``instance_id``; False where
        none lies in the image (counted)."""
        painted = polygon_mask(rings, *self.instance_map.shape, path, where)
        if painted is None or not painted[1].any():
            self._leave_out("outside" if any(len(outer) for outer, _ in rings) else "empty")
            return False
        (rows, cols), patch = painted
        self.instance_map[rows, cols][patch] = instance_id
        self._painted.append(instance_id)
        return True

    def paint_pixels(self, instance_id: int, rows: np.ndarray, cols: np.ndarray) -> None:
        """Paint the pixels at ``rows``, ``cols`` (inside the image) as ``instance_id``."""
        if not len(rows):
            self._leave_out("empty")
            return
        self.instance_map[rows, cols] = instance_id
        self._painted.append(instance_id)

    def finish(self, classes: dict[int, int]) -> tuple[np.ndarray, dict[int, int], dict[str, int]]:
        """The instance map renumbered 1..N (:func:`compact_ids`), the classes of the nuclei kept, and the
        counts of those left out by reason."""
        counts = np.bincount(self.instance_map.ravel(), minlength=max(self._painted, default=0) + 1)
        covered = int(np.count_nonzero(counts[np.asarray(self._painted, np.int64)] == 0))
        if covered:
            self.left_out["covered"] = covered
        instance_map, classes = compact_ids(self.instance_map, classes, counts)
        return instance_map, classes, dict(self.left_out)


def compact_ids(instance_map: np.ndarray, classes: dict[int, int],
                counts: np.ndarray | None = None) -> tuple[np.ndarray, dict[int, int]]:
    """Renumber instances 1..N in id order, dropping ids with no pixels left (painted over). ``counts``: the
    map's ``np.bincount`` where the caller has it already."""
    counts = np.bincount(instance_map.ravel()) if counts is None else counts
    present = np.flatnonzero(counts)
    present = present[present > 0]
    lookup = np.zeros(counts.size, np.int32)
    lookup[present] = np.arange(1, present.size + 1, dtype=np.int32)
    new_classes = {int(lookup[i]): c for i, c in classes.items() if i < counts.size and counts[i] > 0}
    return lookup[instance_map], new_classes


# Formats whose compression invents values between neighbouring pixels: a mask saved in one has new grey values or
# colours along every edge, each of which would read as an instance of its own.
LOSSY_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}
# A label image whose instances average fewer pixels than this is a photograph, not an instance map (a nucleus at
# 20x is some 50-500 pixels): a JPEG photo sent as a mask read as 24,056 "nuclei" on a 256 x 256 tile.
MIN_MEAN_INSTANCE_PIXELS = 8


def _label_image_size(path: Path) -> None:
    """Check a label image's size from its header (Pillow reads only that) before OpenCV decodes it, and that its
    format is lossless."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_pixels decides
            with Image.open(path) as header:
                size, kind = header.size, header.format
    except Image.DecompressionBombError:
        raise DataError(path, f"mask image too large to read safely: over MAX_IMAGE_PIXELS "
                              f"({limits.MAX_IMAGE_PIXELS} pixels)") from None
    except (UnidentifiedImageError, OSError):
        return  # not an image Pillow knows: OpenCV reports it below
    check_pixels(size[1], size[0], path, "mask image")
    if kind in LOSSY_FORMATS:
        raise DataError(path, f"a {LOSSY_FORMATS[kind]} cannot hold an instance map: its compression makes new "
                              "values along every edge; save the mask as PNG, TIFF or npy")


def read_label_image(path: Path) -> np.ndarray:
    """A label image (PNG/TIFF) as an array of ids: 8/16/32-bit grey values are ids; an RGB label image gets one
    id per distinct colour, black = background. Lossy formats and photographs are refused naming the file."""
    _label_image_size(path)
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(path, "not a readable label image (npy, png or tiff expected)")
    if mask.ndim == 3:
        colours = mask[:, :, :3].astype(np.int64)
        packed = (colours[:, :, 0] << 16) | (colours[:, :, 1] << 8) | colours[:, :, 2]
        values, inverse = np.unique(packed, return_inverse=True)
        # Renumber colours 1..N in first-seen order of the sorted codes; black stays background.
        ids = np.arange(len(values)) + (0 if values[0] == 0 else 1)
        mask = ids[inverse.reshape(packed.shape)]
    instances, foreground = len(np.unique(mask)) - int(mask.min() == 0), int(np.count_nonzero(mask))
    if instances and foreground < MIN_MEAN_INSTANCE_PIXELS * instances:
        raise DataError(path, f"{instances} instances of {foreground / instances:.1f} pixels on average: this "
                              "looks like a photograph, not an instance map (one id or colour per nucleus, "
                              "0 or black for background)")
    return mask
