"""PanNuke fold arrays.

Layout::

    root/images.npy   N x H x W x 3, uint8 or float (0..255; floats all within 0..1 are scaled up)
    root/masks.npy    N x H x W x (K + 1): channel k holds the instance ids of class k, the last channel
                      is background
    root/types.npy    optional N tissue names; not used (a tissue is not a split group: it spans slides)

Classes default to PanNuke's five. Instances are renumbered 1..N per image across channels (channel order,
then id order); a pixel claimed by two channels goes to the later one. Arrays are memory-mapped, so a
4 GB fold streams one image at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlcore.readers._common import (FormatSource, as_instance_map, check_class_names, check_pixels, compact_ids,
                                    load_npy, make_label_set)
from mlcore.types import AnnotatedImage, DataError, LabelSet

PANNUKE_CLASSES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")


def open_source(root: Path, class_names: list[str] | None, label_set_name: str, labelled: bool) -> FormatSource:
    images_path, masks_path = root / "images.npy", root / "masks.npy"
    images = load_npy(images_path, mmap=True)
    masks = load_npy(masks_path, mmap=True)
    if images.ndim != 4 or images.shape[3] != 3:
        raise DataError(images_path, f"expected N x H x W x 3 images, got shape {images.shape}")
    if masks.ndim != 4 or masks.shape[3] < 2:
        raise DataError(masks_path, f"expected N x H x W x (classes + 1) masks, got shape {masks.shape}")
    if masks.shape[:3] != images.shape[:3]:
        raise DataError(masks_path, f"masks shape {masks.shape[:3]} (N, H, W) differs from images "
                                    f"shape {images.shape[:3]} in {images_path.name}")
    check_pixels(images.shape[1], images.shape[2], images_path, "each image")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(images_path, f"images must be numbers, got dtype {images.dtype}")
    n_classes = masks.shape[3] - 1
    names = list(class_names) if class_names is not None else list(PANNUKE_CLASSES)
    check_class_names(names, n_classes, masks_path, f"{masks_path.name} (one channel per class + background)")
    label_set = make_label_set(label_set_name, names, None, masks_path) if labelled else None

    def read_item(index: int) -> AnnotatedImage:
        return _read_image(root, images, masks, index, n_classes, label_set)

    return FormatSource(label_set, range(images.shape[0]), read_item, lambda index: images_path)


def _read_image(root: Path, images: np.ndarray, masks: np.ndarray, index: int, n_classes: int,
                label_set: LabelSet | None) -> AnnotatedImage:
    images_path, masks_path = root / "images.npy", root / "masks.npy"
    where = f"image {index}"
    image = np.asarray(images[index])
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise DataError(images_path, f"{where}: image has non-finite values")
        if image.max() <= 1.0:
            image = image * 255.0
        image = np.round(image)
    if image.size and (image.min() < 0 or image.max() > 255):
        raise DataError(images_path, f"{where}: pixel values outside 0..255")
    image = image.astype(np.uint8)
    instance_map = np.zeros(image.shape[:2], np.int32)
    classes: dict[int, int] = {}
    next_id = 1
    for channel in range(n_classes):
        ids = as_instance_map(masks[index, :, :, channel], Path(f"{masks_path} [{where}, channel {channel}]"))
        present, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(ids.shape)
        offset = next_id - (1 if present[0] == 0 else 0)  # unique value j > 0 becomes id offset + j
        foreground = ids > 0
        instance_map[foreground] = inverse[foreground] + offset
        count = int(present.size - (1 if present[0] == 0 else 0))
        classes.update({i: channel for i in range(next_id, next_id + count)})
        next_id += count
    instance_map, classes = compact_ids(instance_map, classes)
    if label_set is None:
        classes = {}
    return AnnotatedImage(name=f"{root.name}_{index:05d}", image=image, instance_map=instance_map,
                          classes=classes, source_path=str(images_path))
