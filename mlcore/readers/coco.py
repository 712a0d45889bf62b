"""COCO instances JSON.

``path`` is a folder holding ``annotations.json`` (images in ``images/`` beside it, or beside the json)
or the json file itself. Each annotation is one nucleus; its ``segmentation`` is polygons (a list of
flat ``[x0, y0, x1, y1, ...]`` lists, pixel-edge coordinates), uncompressed RLE (``{"counts": [ints],
"size": [h, w]}``) or compressed RLE (``counts`` as COCO's character string); RLE runs are column-major
and start with background.

Instances are numbered 1..N per image in annotation order. Where annotations overlap the later one wins;
one left with no pixel (wholly covered by later ones, wholly outside the image, an empty segmentation) is left
out and counted by reason in the image's ``left_out``. Categories, sorted by id, are the label set's classes. An
annotation whose ``category_id`` is missing, null or 0 (0 not being a category) is an unlabelled
nucleus; ``iscrowd`` is ignored (every annotation is a nucleus). Images without annotations are kept.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mlcore.readers._common import (FormatSource, PaintedNuclei, check_class_names, load_json, make_label_set,
                                    read_rgb)
from mlcore.types import AnnotatedImage, DataError, LabelSet, NoClassNames

ANNOTATION_FILE = "annotations.json"


def open_source(path: Path, class_names: list[str] | None, label_set_name: str, labelled: bool) -> FormatSource:
    json_path = path / ANNOTATION_FILE if path.is_dir() else path
    content = load_json(json_path)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(json_path, 'not a COCO instances file (no "images" list)')
    annotations = content.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(json_path, '"annotations" must be a list')
    category_index, label_set = _categories(content, json_path, class_names, label_set_name, labelled)
    images = _images(content["images"], json_path)
    per_image: dict[Any, list[dict]] = defaultdict(list)
    for position, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise DataError(json_path, f"annotation #{position} is not an object with an image_id")
        if annotation["image_id"] not in images:
            raise DataError(json_path, f"annotation {annotation.get('id', '#' + str(position))} refers to "
                                       f"image id {annotation['image_id']!r}, which is not in \"images\"")
        per_image[annotation["image_id"]].append(annotation)
    items = [(record, per_image.get(image_id, [])) for image_id, record in images.items()]

    def read_item(item: tuple[dict, list[dict]]) -> AnnotatedImage:
        record, image_annotations = item
        return _read_image(json_path, record, image_annotations, category_index, label_set)

    return FormatSource(label_set, items, read_item, lambda item: _image_path(json_path, item[0]))


def _categories(content: dict, json_path: Path, class_names: list[str] | None, name: str,
                labelled: bool) -> tuple[dict[Any, int], LabelSet | None]:
    if not labelled:
        return {}, None
    categories = content.get("categories")
    if not isinstance(categories, list) or not categories:
        raise NoClassNames(json_path, 'no "categories", so no class names')
    if not all(isinstance(c, dict) and "id" in c and isinstance(c.get("name"), str) for c in categories):
        raise DataError(json_path, 'every category needs an "id" and a "name"')
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(json_path, f"category ids repeat: {ids}")
    try:
        ordered = sorted(categories, key=lambda c: c["id"])
    except TypeError:
        raise DataError(json_path, f"category ids must all be integers, got {ids}") from None
    check_class_names(class_names, len(ordered), json_path, '"categories"')
    names = class_names or [c["name"] for c in ordered]
    colors = [c.get("color") for c in ordered]  # not standard COCO, but some tools add it
    label_set = make_label_set(name, names, colors if any(colors) else None, json_path)
    return {c["id"]: index for index, c in enumerate(ordered)}, label_set


def _images(records: list, json_path: Path) -> dict[Any, dict]:
    images: dict[Any, dict] = {}
    file_names: set[str] = set()
    for position, record in enumerate(records):
        if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("file_name"), str):
            raise DataError(json_path, f'image #{position} needs an "id" and a "file_name"')
        if record["id"] in images:
            raise DataError(json_path, f"image id {record['id']!r} is listed twice")
        if record["file_name"] in file_names:
            raise DataError(json_path, f"image file {record['file_name']!r} is listed twice")
        images[record["id"]] = record
        file_names.add(record["file_name"])
    return images


def _image_path(json_path: Path, record: dict) -> Path:
    base = json_path.parent
    candidates = (base / "images" / record["file_name"], base / record["file_name"])
    for candidate in candidates:
        # An uploaded dataset must not make us read files outside its own folder.
        if not candidate.resolve().is_relative_to(base.resolve()):
            raise DataError(json_path, f"image file_name {record['file_name']!r} points outside the dataset folder")
        if candidate.is_file():
            return candidate
    return candidates[0]


def _read_image(json_path: Path, record: dict, annotations: list[dict], category_index: dict[Any, int],
                label_set: LabelSet | None) -> AnnotatedImage:
    image_path = _image_path(json_path, record)
    if not image_path.is_file():
        raise DataError(image_path, f"image file not found (listed as {record['file_name']!r} in {json_path.name})")
    image = read_rgb(image_path)
    height, width = image.shape[:2]
    declared = (record.get("height"), record.get("width"))
    if declared != (None, None) and declared != (height, width):
        raise DataError(image_path, f"image size {width}x{height} differs from the size {declared[1]}x"
                                    f"{declared[0]} given in {json_path.name}")
    nuclei = PaintedNuclei(height, width)
    classes: dict[int, int] = {}
    for instance_id, annotation in enumerate(annotations, start=1):
        where = f"annotation {annotation.get('id', instance_id)} of image {record['file_name']}"
        _paint(nuclei, instance_id, annotation.get("segmentation"), json_path, where)
        if label_set is not None:
            category = annotation.get("category_id")
            if category in category_index:
                classes[instance_id] = category_index[category]
            elif category is not None and category != 0:
                raise DataError(json_path, f"{where}: unknown category_id {category!r} "
                                           f"(categories: {sorted(category_index)})")
    instance_map, classes, left_out = nuclei.finish(classes)
    name = PurePosixPath(record["file_name"]).with_suffix("").as_posix()
    return AnnotatedImage(name=name, image=image, instance_map=instance_map, classes=classes,
                          source_path=str(image_path), left_out=left_out)


def _paint(nuclei: PaintedNuclei, instance_id: int, segmentation: Any, json_path: Path, where: str) -> None:
    height, width = nuclei.instance_map.shape
    if isinstance(segmentation, list):
        rings = []
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) % 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
                raise DataError(json_path, f"{where}: a polygon must be a flat list of x, y numbers")
            rings.append((np.asarray(polygon, dtype=np.float64).reshape(-1, 2), ()))
        nuclei.paint_rings(instance_id, rings, json_path, where)
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if size != [height, width] and tuple(size or ()) != (height, width):
            raise DataError(json_path, f"{where}: RLE size {size} differs from the image size [{height}, {width}]")
        counts = segmentation["counts"]
        if isinstance(counts, str):
            counts = decode_rle_string(counts, json_path, where)
        elif not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise DataError(json_path, f"{where}: RLE counts must be a list of integers or a string")
        nuclei.paint_pixels(instance_id, *rle_foreground(counts, height, width, json_path, where))
    else:
        raise DataError(json_path, f"{where}: segmentation must be polygons or RLE, got {type(segmentation).__name__}")


def rle_foreground(counts: list[int] | np.ndarray, height: int, width: int, path: Path | None = None,
                   where: str = "RLE") -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the foreground pixels of a COCO RLE (runs alternate 0, 1, 0, ...).

    Works from the runs rather than a full-image mask, so large images with many nuclei stay cheap.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and counts.min() < 0:
        raise DataError(path, f"{where}: RLE has a negative run length")
    if int(counts.sum()) != height * width:
        raise DataError(path, f"{where}: RLE runs cover {int(counts.sum())} pixels, not {height}x{width}")
    run_starts = np.cumsum(counts) - counts
    starts, lengths = run_starts[1::2], counts[1::2]
    # Flat column-major indices of every foreground pixel: each run's start repeated, plus 0..len-1.
    offsets = np.cumsum(lengths) - lengths
    flat = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))
    return flat % height, flat // height


def rle_to_mask(counts: list[int] | str, size: tuple[int, int] | list[int]) -> np.ndarray:
    """Decode a COCO RLE (list or compressed string counts) to an H x W bool mask."""
    height, width = int(size[0]), int(size[1])
    if isinstance(counts, str):
        counts = decode_rle_string(counts)
    mask = np.zeros((height, width), bool)
    rows, cols = rle_foreground(counts, height, width)
    mask[rows, cols] = True
    return mask


def decode_rle_string(text: str, path: Path | None = None, where: str = "RLE") -> list[int]:
    """Decode COCO's compressed RLE counts (pycocotools' ``rleFrString``).

    Each count is written in 5-bit groups, least significant first, as characters from '0' (48): bit
    0x20 of a group says another group follows, bit 0x10 of the last group is the sign. From the fourth
    count on, the value stored is the difference from the count two places before.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        more = True
        while more:
            if position >= len(text):
                raise DataError(path, f"{where}: compressed RLE string ends in the middle of a number")
            group = ord(text[position]) - 48
            if not 0 <= group < 64:
                raise DataError(path, f"{where}: invalid character {text[position]!r} in compressed RLE")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
