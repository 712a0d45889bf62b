"""Per-instance geometry of an instance map: the one home of bounding boxes, centroids and areas.

One bounding-box order everywhere: **row first, as numpy indexes** — ``(y0, x0, y1, x1)``, ends
exclusive like slices, so ``instance_map[y0:y1, x0:x1]`` is an instance's box. :class:`InstanceGeometry`
holds the boxes in that order as an (N, 4) array. The record form that the exporters and the web app's
import store (:data:`GEOMETRY_DTYPE`, from :func:`nucleus_geometry`) names its fields (``x0``, ``y0``,
``x1``, ``y1``), so no caller depends on a position; :func:`geometry_records` is the one conversion.

Centroids are ``(x, y)``: column and row means of the instance's pixels (pixel-centre coordinates).

No Python loop over pixels: boxes come from ``scipy.ndimage.find_objects`` (one C pass over the map),
areas and centroids from ``np.bincount`` over the foreground pixels only (nuclei cover a fraction of a
tile). The sums are of integers in float64, so exact, whatever the order of the pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

GEOMETRY_DTYPE = np.dtype([("id", np.int32), ("x0", np.int32), ("y0", np.int32), ("x1", np.int32),
                           ("y1", np.int32), ("cx", np.float64), ("cy", np.float64), ("area", np.int64)])


@dataclass
class InstanceGeometry:
    """Per-instance geometry of an instance map, rows in increasing instance id."""

    ids: np.ndarray        # (N,) int64 instance ids present in the map
    bboxes: np.ndarray     # (N, 4) int64 y0, x0, y1, x1 (end exclusive)
    centroids: np.ndarray  # (N, 2) float64 x, y (mean pixel position)
    areas: np.ndarray      # (N,) int64 pixel counts


def _integer_labels(instance_map: np.ndarray) -> np.ndarray:
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
    return labels


def instance_geometry(instance_map: np.ndarray) -> InstanceGeometry:
    """Bounding boxes, centroids and areas of every instance, without a Python loop over pixels."""
    labels = _integer_labels(np.asarray(instance_map))
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


def geometry_records(geometry: InstanceGeometry) -> np.ndarray:
    """The geometry as :data:`GEOMETRY_DTYPE` records sorted by id (named box fields, no order to recall)."""
    records = np.zeros(geometry.ids.size, GEOMETRY_DTYPE)
    records["id"] = geometry.ids
    records["y0"], records["x0"], records["y1"], records["x1"] = geometry.bboxes.T
    records["cx"], records["cy"] = geometry.centroids.T
    records["area"] = geometry.areas
    return records


def nucleus_geometry(instance_map: np.ndarray) -> np.ndarray:
    """Per-instance bounding box, centroid and area as :data:`GEOMETRY_DTYPE` records sorted by id.

    Fields: ``id``; ``x0, y0, x1, y1`` (bounding box, x1/y1 exclusive like slices); ``cx, cy`` (centroid,
    pixel-centre coordinates: column and row means); ``area`` (pixels).
    """
    return geometry_records(instance_geometry(instance_map))


def instance_masks(instance_map: np.ndarray, geometry: InstanceGeometry | None = None
                   ) -> Iterator[tuple[int, slice, slice, np.ndarray]]:
    """Each instance's mask on its bounding-box crop, with one pixel of background around it (so that an
    instance touching the crop's edge gets a closed outline): yields ``(id, rows, cols, mask)`` in id
    order, where ``rows``/``cols`` are the box's slices and ``mask`` is uint8 0/1 of shape
    (box height + 2, width + 2). The boxes come from ``geometry`` (computed when not given), so the cost
    follows the nuclei, not the image size."""
    instance_map = np.asarray(instance_map)
    if instance_map.size == 0:
        return
    if geometry is None:
        geometry = instance_geometry(instance_map)
    for instance_id, (y0, x0, y1, x1) in zip(geometry.ids.tolist(), geometry.bboxes.tolist()):
        rows, cols = slice(y0, y1), slice(x0, x1)
        mask = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
        np.equal(instance_map[rows, cols], instance_id, out=mask[1:-1, 1:-1].view(bool))
        yield instance_id, rows, cols, mask
