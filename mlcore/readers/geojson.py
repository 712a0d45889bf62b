"""QuPath GeoJSON exports.

Layout: images in ``root/images/`` (or ``root`` itself) and, per image, ``<stem>.geojson`` beside the image
or in ``root``. A file holds a FeatureCollection, or a bare list of Features as older QuPath versions
write. Each Polygon or MultiPolygon feature is one nucleus (holes are subtracted; for QuPath cell objects
the ``nucleusGeometry`` is used); coordinates are pixel-edge coordinates as QuPath writes them.

The class is ``properties.classification.name``; its colour ``properties.classification.color``
([r, g, b]) or ``colorRGB`` (packed integer). A feature without classification is an unlabelled nucleus.
The label set is ``class_names`` when given, else the sorted set of class names found in the files.
Features are numbered 1..N in file order; where they overlap the later one wins. One left with no pixel (wholly
covered by later ones, wholly outside the image, an empty outline) is left out, and counted by reason in the
image's ``left_out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlcore.readers._common import (QUPATH_NOT_NUCLEI, FormatSource, PaintedNuclei, list_images, load_json,
                                    make_label_set, parse_color, qupath_class_name, read_rgb, unique_stems)
from mlcore.types import AnnotatedImage, DataError, LabelSet, NoClassNames

SUFFIX = ".geojson"


def open_source(root: Path, class_names: list[str] | None, label_set_name: str, labelled: bool) -> FormatSource:
    image_dir = root / "images" if (root / "images").is_dir() else root
    images = list_images(image_dir)
    unique_stems(images)
    pairs = [(image_path, _annotation_path(root, image_path)) for image_path in images]
    stems = {image_path.stem for image_path in images}
    for orphan in sorted({*root.glob("*" + SUFFIX), *image_dir.glob("*" + SUFFIX)}):
        if orphan.stem not in stems:
            raise DataError(orphan, f"annotations without an image (no {orphan.stem}.png or .jpg in {image_dir})")
    label_set = _label_set([p for _, p in pairs], class_names, label_set_name) if labelled else None

    def read_item(pair: tuple[Path, Path]) -> AnnotatedImage:
        return _read_image(pair[0], pair[1], label_set)

    return FormatSource(label_set, pairs, read_item, lambda pair: pair[0])


def _annotation_path(root: Path, image_path: Path) -> Path:
    for candidate in (image_path.with_suffix(SUFFIX), root / (image_path.stem + SUFFIX)):
        if candidate.is_file():
            return candidate
    raise DataError(image_path, f"no annotation file {image_path.stem}{SUFFIX} beside the image or in {root}")


def read_features(path: Path) -> list[dict]:
    """The features of a GeoJSON file: FeatureCollection, bare list of Features, or one Feature."""
    content = load_json(path)
    if isinstance(content, dict) and content.get("type") == "FeatureCollection":
        features = content.get("features")
    elif isinstance(content, dict) and content.get("type") == "Feature":
        features = [content]
    else:
        features = content
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise DataError(path, "not GeoJSON features (expected a FeatureCollection or a list of Features)")
    return features


def _classification(feature: dict, path: Path, position: int) -> tuple[str | None, Any]:
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise DataError(path, f"feature #{position}: properties must be an object")
    classification = properties.get("classification")
    try:
        name = qupath_class_name(classification)
    except ValueError as exc:
        raise DataError(path, f"feature #{position}: {exc}") from None
    if name is None or not isinstance(classification, dict):
        return name, None
    return name, classification.get("color", classification.get("colorRGB"))


_NUCLEI = frozenset({"detection", "cell"})


def _object_type(feature: dict) -> str:
    properties = feature.get("properties") if isinstance(feature.get("properties"), dict) else {}
    kind = properties.get("objectType", feature.get("objectType"))
    return kind.lower() if isinstance(kind, str) else ""


def nucleus_features(path: Path) -> list[tuple[int, dict]]:
    """``(position in the file, feature)`` of the features that are nuclei. A file of detections or cells
    exported with "all objects" carries the tissue annotation around them too: those then are not nuclei (the
    region became a nucleus of class "Region*" that the detections painted over). A file of annotations only
    (this program's per-image export, hand-drawn nuclei) is a file of nuclei."""
    features = list(enumerate(read_features(path)))
    if any(_object_type(feature) in _NUCLEI for _, feature in features):
        features = [(position, feature) for position, feature in features if _object_type(feature) not in QUPATH_NOT_NUCLEI]
    return features


def _label_set(annotation_paths: list[Path], class_names: list[str] | None, name: str) -> LabelSet:
    found: set[str] = set()
    colors: dict[str, tuple[int, int, int]] = {}
    for path in annotation_paths:
        for position, feature in nucleus_features(path):
            class_name, color = _classification(feature, path, position)
            if class_name is not None:
                found.add(class_name)
                if color is not None and class_name not in colors:
                    colors[class_name] = parse_color(color, path)
    names = list(class_names) if class_names is not None else sorted(found)
    if not names:
        files = len(annotation_paths)
        raise NoClassNames(annotation_paths[0] if files else None,
                           "no classified feature" + (f" here or in the other {files - 1} GeoJSON files" if files > 1
                                                      else "") + " and no class names given")
    return make_label_set(name, names, [colors.get(n) for n in names], None)


def _rings(geometry: Any, path: Path, where: str) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    if not isinstance(geometry, dict):
        raise DataError(path, f"{where}: no geometry")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        polygons = [coordinates]
    elif kind == "MultiPolygon":
        polygons = coordinates
    else:
        raise DataError(path, f"{where}: geometry type {kind!r} is not supported (nuclei need Polygon or MultiPolygon)")
    rings = []
    try:
        for polygon in polygons:
            arrays = [np.asarray(ring, dtype=np.float64)[:, :2] for ring in polygon]
            if arrays:
                rings.append((arrays[0], arrays[1:]))
    except (TypeError, ValueError, IndexError):
        raise DataError(path, f"{where}: malformed {kind} coordinates") from None
    return rings


def _read_image(image_path: Path, annotation_path: Path, label_set: LabelSet | None) -> AnnotatedImage:
    image = read_rgb(image_path)
    height, width = image.shape[:2]
    nuclei = PaintedNuclei(height, width)
    classes: dict[int, int] = {}
    for position, feature in nucleus_features(annotation_path):
        instance_id = position + 1   # gaps where objects were not nuclei: compact_ids renumbers
        where = f"feature #{position}"
        geometry = feature.get("nucleusGeometry") or feature.get("geometry")
        nuclei.paint_rings(instance_id, _rings(geometry, annotation_path, where), annotation_path, where)
        class_name, _ = _classification(feature, annotation_path, position)
        if label_set is not None and class_name is not None:
            if class_name not in label_set.classes:
                raise DataError(annotation_path, f"{where}: unknown class {class_name!r} "
                                                 f"(label set: {', '.join(label_set.classes)})")
            classes[instance_id] = label_set.index(class_name)
    instance_map, classes, left_out = nuclei.finish(classes)
    return AnnotatedImage(name=image_path.stem, image=image, instance_map=instance_map, classes=classes,
                          source_path=str(image_path), left_out=left_out)
