"""The method's own format (as in NuCLS here).

Layout::

    root/images/<stem>.png|jpg     the H&E image
    root/masks/<stem>.npy          H x W integer instance map, 0 = background
    root/types/<stem>.npy          N x 2 integers: (instance id, class index into classes.json)
    root/classes.json              {"classes": [name, ...], "colors": [[r, g, b], ...] (optional)}

An instance present in the mask but absent from its types file is unlabelled (so is one whose class
index is -1).
"""

from __future__ import annotations

from pathlib import Path

from mlcore.readers._common import (FormatSource, as_instance_map, check_class_names, check_same_size,
                                    checked_classes, list_images, load_json, load_npy, make_label_set, read_rgb,
                                    unique_stems)
from mlcore.types import AnnotatedImage, DataError, LabelSet, NoClassNames


def open_source(root: Path, class_names: list[str] | None, label_set_name: str, labelled: bool) -> FormatSource:
    images = list_images(root / "images")
    unique_stems(images)
    if not (root / "masks").is_dir():
        raise DataError(root / "masks", "mask folder not found (seed format needs masks/<stem>.npy)")
    stems = {path.stem for path in images}
    orphans = sorted(p for p in (root / "masks").glob("*.npy") if p.stem not in stems)
    if orphans:
        raise DataError(orphans[0], f"mask without an image (no images/{orphans[0].stem}.png or .jpg)")
    label_set = _label_set(root, class_names, label_set_name) if labelled else None
    if labelled and not (root / "types").is_dir():
        raise NoClassNames(root / "types", "types folder not found (seed format needs types/<stem>.npy)")

    def read_item(image_path: Path) -> AnnotatedImage:
        return _read_image(root, image_path, label_set)

    return FormatSource(label_set, images, read_item, lambda image_path: image_path)


def _label_set(root: Path, class_names: list[str] | None, name: str) -> LabelSet:
    classes_path = root / "classes.json"
    if not classes_path.is_file():
        if class_names is None:
            raise DataError(classes_path, "classes.json not found and no class names given")
        return make_label_set(name, class_names, None, classes_path)
    content = load_json(classes_path)
    if not isinstance(content, dict) or not isinstance(content.get("classes"), list):
        raise DataError(classes_path, 'expected {"classes": [name, ...]}')
    names = content["classes"]
    if not all(isinstance(n, str) and n for n in names):
        raise DataError(classes_path, f"class names must be non-empty strings, got {names}")
    check_class_names(class_names, len(names), classes_path, "classes.json")
    colors = content.get("colors")
    if colors is not None and (not isinstance(colors, list) or len(colors) != len(names)):
        raise DataError(classes_path, f'"colors" must list one [r, g, b] per class ({len(names)})')
    return make_label_set(name, class_names or names, colors, classes_path)


def _read_image(root: Path, image_path: Path, label_set: LabelSet | None) -> AnnotatedImage:
    stem = image_path.stem
    image = read_rgb(image_path)
    mask_path = root / "masks" / f"{stem}.npy"
    instance_map = as_instance_map(load_npy(mask_path, mask=True), mask_path)
    check_same_size(image, instance_map, mask_path, image_path)
    classes: dict[int, int] = {}
    if label_set is not None:
        types_path = root / "types" / f"{stem}.npy"
        classes = checked_classes(load_npy(types_path), instance_map, label_set, types_path)
    return AnnotatedImage(name=stem, image=image, instance_map=instance_map, classes=classes,
                          source_path=str(image_path))
