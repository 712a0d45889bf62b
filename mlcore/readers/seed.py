"""The method's own format (as in NuCLS here).

Layout::

    root/images/<stem>.png|jpg     the H&E image
    root/masks/<stem>.npy          H x W integer instance map, 0 = background
    root/types/<stem>.npy          N x 2 integers: (instance id, class index into classes.json)
    root/classes.json              {"classes": [name, ...], "colors": [[r, g, b], ...] (optional)}

An instance present in the mask but absent from its types file is unlabelled (so is one whose class
index is -1).

The mask may also be a label image, ``masks/<stem>.png|tif|tiff`` (8/16/32-bit ids, or one colour per
nucleus), named as a segmentation tool saves it: ``<stem>_cp_masks.png`` (cellpose) and ``<stem>_masks.tif``
read as ``<stem>``. So a lab's own tiles segmented by cellpose or StarDist upload as an unlabelled dataset
(without ``types/``), for the classifier to predict and reviewers to correct.
"""

from __future__ import annotations

from pathlib import Path

from mlcore.readers._common import (FormatSource, as_instance_map, check_class_names, check_same_size,
                                    checked_classes, list_images, load_json, load_npy, make_label_set,
                                    read_label_image, read_rgb, unique_stems)
from mlcore.types import AnnotatedImage, DataError, LabelSet, NoClassNames


# JPEG and WebP are listed to be refused by name (read_label_image): lossy, they cannot hold ids.
MASK_SUFFIXES = (".npy", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".webp")
# What segmentation tools append to the image's stem: cellpose's --save_png/--save_tif, and a common habit.
MASK_NAME_ENDINGS = ("_cp_masks", "_masks")


def mask_stem(path: Path) -> str:
    """The image stem a mask file belongs to (``a_cp_masks.png`` -> ``a``)."""
    for ending in MASK_NAME_ENDINGS:
        if path.stem.endswith(ending) and len(path.stem) > len(ending):
            return path.stem[:-len(ending)]
    return path.stem


def has_masks(root: Path) -> bool:
    """Whether ``root/masks`` holds a mask file (format detection: nothing is read)."""
    folder = root / "masks"
    return folder.is_dir() and any(path.suffix.lower() in MASK_SUFFIXES for path in folder.iterdir())


def mask_files(root: Path, image_stems: set[str]) -> dict[str, Path]:
    """Each stem's mask under ``root/masks``: named as its image, or so with a tool's ending (see the module's
    docstring); two for one image are refused."""
    found: dict[str, Path] = {}
    folder = root / "masks"
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.suffix.lower() not in MASK_SUFFIXES or not path.is_file():
            continue
        stem = path.stem if path.stem in image_stems else mask_stem(path)
        if stem in found:
            raise DataError(path, f"two masks for image {stem!r} ({found[stem].name} and {path.name})")
        found[stem] = path
    return found


def open_source(root: Path, class_names: list[str] | None, label_set_name: str, labelled: bool) -> FormatSource:
    images = list_images(root / "images")
    unique_stems(images)
    if not (root / "masks").is_dir():
        raise DataError(root / "masks", "mask folder not found (seed format needs masks/<stem>.npy, or a label "
                                        "image masks/<stem>.png or .tif)")
    stems = {path.stem for path in images}
    masks = mask_files(root, stems)
    orphans = sorted(path for stem, path in masks.items() if stem not in stems)
    if orphans:
        raise DataError(orphans[0], f"mask without an image (no images/{mask_stem(orphans[0])}.png or .jpg)")
    label_set = _label_set(root, class_names, label_set_name) if labelled else None
    if labelled and not (root / "types").is_dir():
        raise NoClassNames(root / "types", "types folder not found (seed format needs types/<stem>.npy)")

    def read_item(image_path: Path) -> AnnotatedImage:
        return _read_image(root, image_path, masks.get(image_path.stem), label_set)

    return FormatSource(label_set, images, read_item, lambda image_path: image_path)


def _label_set(root: Path, class_names: list[str] | None, name: str) -> LabelSet:
    classes_path = root / "classes.json"
    if not classes_path.is_file():
        if class_names is None:
            raise NoClassNames(classes_path, "classes.json not found, so no class names")
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


def _read_image(root: Path, image_path: Path, mask_path: Path | None, label_set: LabelSet | None) -> AnnotatedImage:
    stem = image_path.stem
    image = read_rgb(image_path)
    if mask_path is None:
        raise DataError(root / "masks" / f"{stem}.npy", "mask file not found (masks/<stem>.npy, or a label image "
                                                        "masks/<stem>.png or .tif)")
    mask = load_npy(mask_path, mask=True) if mask_path.suffix.lower() == ".npy" else read_label_image(mask_path)
    instance_map = as_instance_map(mask, mask_path)
    check_same_size(image, instance_map, mask_path, image_path)
    classes: dict[int, int] = {}
    if label_set is not None:
        types_path = root / "types" / f"{stem}.npy"
        classes = checked_classes(load_npy(types_path), instance_map, label_set, types_path)
    return AnnotatedImage(name=stem, image=image, instance_map=instance_map, classes=classes,
                          source_path=str(image_path))
