"""Cutting the classifier's input: one square RGB crop per nucleus.

A crop is centred on the centre of the nucleus's bounding box. A nucleus that fits gets a
``size x size`` window at full resolution, neighbouring tissue included (the context helps tell a
lymphocyte from a tumour cell). A larger nucleus gets a square as wide as its largest extent,
resized down to ``size`` so that the whole nucleus stays visible. Pixels outside the image are
mirrored (OpenCV's BORDER_REFLECT_101: ``dcb|abcd|cba``), never filled with black, so that the
network does not learn "black edge = border nucleus".

No Python loop over pixels: bounding boxes come from ``scipy.ndimage.find_objects`` (one C pass over
the mask), centroids from ``np.bincount`` over the foreground, and each fitting crop is one slice copy
from the image mirror-padded once. Only the (rare) large nuclei are resized, one by one, with OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

CROP_SIZE = 64
# Bump when the cutting changes so that cached crops are cut again.
CROP_ALGORITHM_VERSION = 1


@dataclass
class InstanceGeometry:
    """Per-instance geometry of an instance map, rows in increasing instance id."""

    ids: np.ndarray        # (N,) int64 instance ids present in the map
    bboxes: np.ndarray     # (N, 4) int64 y0, x0, y1, x1 (end exclusive)
    centroids: np.ndarray  # (N, 2) float64 x, y (mean pixel position)
    areas: np.ndarray      # (N,) int64 pixel counts


def instance_geometry(instance_map: np.ndarray) -> InstanceGeometry:
    """Bounding boxes, centroids and areas of every instance, without a Python loop over pixels."""
    if instance_map.ndim != 2:
        raise ValueError(f"instance map must be 2-D, got shape {instance_map.shape}")
    labels = np.asarray(instance_map)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise ValueError(f"instance map must hold integer ids, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("instance map has negative ids")
    # Only foreground pixels enter the sums: nuclei cover a fraction of a tile.
    foreground = np.flatnonzero(labels.ravel())
    flat = labels.ravel()[foreground].astype(np.int64, copy=False)
    max_id = int(flat.max()) if flat.size else 0
    areas_all = np.bincount(flat, minlength=max_id + 1)
    ids = np.flatnonzero(areas_all[1:]) + 1
    if ids.size == 0:
        empty = np.zeros((0,), np.int64)
        return InstanceGeometry(empty, np.zeros((0, 4), np.int64), np.zeros((0, 2)), empty)
    ys, xs = np.divmod(foreground, labels.shape[1])
    sum_x = np.bincount(flat, weights=xs, minlength=max_id + 1)
    sum_y = np.bincount(flat, weights=ys, minlength=max_id + 1)
    areas = areas_all[ids]
    centroids = np.stack([sum_x[ids] / areas, sum_y[ids] / areas], axis=1)
    # find_objects wants int labels; it returns one slice pair per label 1..max, None where absent.
    slices = ndimage.find_objects(labels.astype(np.int32, copy=False) if max_id < 2**31 else labels)
    bboxes = np.array([(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in (slices[i - 1] for i in ids)],
                      dtype=np.int64)
    return InstanceGeometry(ids.astype(np.int64), bboxes, centroids, areas.astype(np.int64))


def reflect_101(index: np.ndarray, length: int) -> np.ndarray:
    """Map any integer coordinates into ``[0, length)`` by mirroring without repeating the edge.

    Works for offsets of any size (periodic), which ``cv2.copyMakeBorder`` does not.
    """
    if length == 1:
        return np.zeros_like(index)
    period = 2 * length - 2
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def crop_windows(bboxes: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner and side of each nucleus's square window (before any resizing).

    The window side is ``size`` when the nucleus fits, else its largest extent. The window
    ``[top, top + side)`` is centred on the bounding box centre ``(y0 + y1) / 2`` (rounded down
    to the pixel grid), so a nucleus of extent <= side always lies wholly inside it.
    """
    extent = np.maximum(bboxes[:, 2] - bboxes[:, 0], bboxes[:, 3] - bboxes[:, 1])
    side = np.maximum(extent, size)
    centre_y = (bboxes[:, 0] + bboxes[:, 2]) // 2
    centre_x = (bboxes[:, 1] + bboxes[:, 3]) // 2
    top_left = np.stack([centre_y - side // 2, centre_x - side // 2], axis=1)
    return top_left, side


def cut_crops(image: np.ndarray, instance_map: np.ndarray, size: int = CROP_SIZE,
              geometry: InstanceGeometry | None = None) -> tuple[np.ndarray, InstanceGeometry]:
    """Crops of every instance of ``instance_map``: (N, size, size, 3) uint8 RGB, rows in id order.

    Returns the crops and the geometry (ids, boxes, centroids) they were cut from.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
    if image.shape[:2] != instance_map.shape:
        raise ValueError(f"image {image.shape[:2]} and instance map {instance_map.shape} differ in size")
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if geometry is None:
        geometry = instance_geometry(instance_map)
    count = len(geometry.ids)
    crops = np.empty((count, size, size, 3), np.uint8)
    if count == 0:
        return crops, geometry
    height, width = image.shape[:2]
    top_left, side = crop_windows(geometry.bboxes, size)
    fits = side == size
    if fits.any():
        # Mirror-pad the image once (a window starts at most size/2 outside it), then take every
        # window in one gather from a strided view: no per-crop index arrays, one copy.
        # Mirror-pad the image once (a window starts at most size/2 outside it), then copy each window
        # as a slice: a contiguous 64-row copy per crop beats any fancy-indexed gather.
        pad = size
        if min(height, width) > pad:
            padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        else:  # tiny image: the mirror folds more than once, which copyMakeBorder does not do
            padded = image[reflect_101(np.arange(-pad, height + pad), height)][:, reflect_101(np.arange(-pad, width + pad), width)]
        rows = np.flatnonzero(fits)
        corners = (top_left[rows] + pad).tolist()
        for row, (y, x) in zip(rows.tolist(), corners):
            crops[row] = padded[y:y + size, x:x + size]
    for index in np.flatnonzero(~fits):
        span = np.arange(side[index])
        rows = reflect_101(top_left[index, 0] + span, height)
        cols = reflect_101(top_left[index, 1] + span, width)
        window = image[rows[:, None], cols[None, :]]
        # INTER_AREA averages when shrinking, so fine texture does not alias.
        crops[index] = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)
    return crops, geometry
