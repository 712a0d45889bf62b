"""Cutting the classifier's input: one square crop per nucleus, RGB, optionally a second, wider view
of its surroundings at a coarser scale, and optionally the nucleus's own mask (:class:`CropSpec` says
which, how much context, and whether the image's stains are normalised first).

A crop is centred on the centre of the nucleus's bounding box. A nucleus that fits gets a
``size x size`` window at full resolution, neighbouring tissue included (the context helps tell a
lymphocyte from a tumour cell). A larger nucleus gets a square as wide as its largest extent,
resized down to ``size`` so that the whole nucleus stays visible. Pixels outside the image are
mirrored (OpenCV's BORDER_REFLECT_101: ``dcb|abcd|cba``), never filled with black, so that the
network does not learn "black edge = border nucleus".

No Python loop over pixels: boxes and centroids come from :func:`mlcore.geometry.instance_geometry`
(boxes ``(y0, x0, y1, x1)``), and each fitting crop is one slice copy
from the image mirror-padded once. Only the (rare) large nuclei are resized, one by one, with OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mlcore.geometry import InstanceGeometry, instance_geometry
from mlcore.stain import StainEstimate, check_method, normalise_stain

CROP_SIZE = 64
# Bump when the cutting changes so that cached crops are cut again.
CROP_ALGORITHM_VERSION = 2


def reflect_101(index: np.ndarray, length: int) -> np.ndarray:
    """Map any integer coordinates into ``[0, length)`` by mirroring without repeating the edge.

    Works for offsets of any size (periodic), which ``cv2.copyMakeBorder`` does not.
    """
    if length == 1:
        return np.zeros_like(index)
    period = 2 * length - 2
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def crop_windows(bboxes: np.ndarray, size: int = CROP_SIZE, shrink: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner and side of each nucleus's square window (before any resizing).

    The window side is ``size`` when the nucleus fits, else its largest extent. The window
    ``[top, top + side)`` is centred on the bounding box centre ``(y0 + y1) / 2`` (rounded down
    to the pixel grid), so a nucleus of extent <= side always lies wholly inside it.
    ``shrink``: the same in an image shrunk by that integer factor (image pixel ``p`` -> ``p // shrink``).
    """
    extent = -(-np.maximum(bboxes[:, 2] - bboxes[:, 0], bboxes[:, 3] - bboxes[:, 1]) // shrink)
    side = np.maximum(extent, size)
    centre_y = (bboxes[:, 0] + bboxes[:, 2]) // 2 // shrink
    centre_x = (bboxes[:, 1] + bboxes[:, 3]) // 2 // shrink
    top_left = np.stack([centre_y - side // 2, centre_x - side // 2], axis=1)
    return top_left, side


@dataclass(frozen=True)
class CropSpec:
    """What the classifier sees of a nucleus.

    - ``size``: the crop's side in pixels, as the network gets it;
    - ``mask_channel``: a fourth channel, 255 on the target nucleus's own pixels and 0 elsewhere, so the
      network knows which of the nuclei in the crop it is classifying;
    - ``context``: the window's side is ``context * size`` image pixels, resized down to ``size``:
      more surrounding tissue for the same network cost;
    - ``context_view``: 0, or a factor ``f`` of 2-4: three more colour channels, a ``size`` window of the
      image shrunk ``f`` times (``f * size`` image pixels) around the same centre, so the network sees the
      tissue around the nucleus without losing the full-resolution view of the nucleus itself.

    Channels: the colours, then the wider view's colours, then the mask.
    """

    size: int = CROP_SIZE
    mask_channel: bool = False
    context: float = 1.0
    # "macenko": the image's stains normalised before cutting, with its source's estimate (mlcore.stain).
    stain_normalisation: str = "none"
    context_view: int = 0

    def __post_init__(self):
        check_method(self.stain_normalisation)
        if self.context_view not in CONTEXT_VIEWS:
            raise ValueError(f"context_view must be one of {', '.join(map(str, CONTEXT_VIEWS))}, "
                             f"got {self.context_view!r}")

    @property
    def channels(self) -> int:
        return (6 if self.context_view else 3) + (1 if self.mask_channel else 0)

    @property
    def window(self) -> int:
        """The side, in image pixels, of the widest window a nucleus that fits in it is seen through."""
        return max(self.size, int(round(self.size * self.context)), self.size * self.context_view)

    def cut(self, image: np.ndarray, instance_map: np.ndarray, geometry: InstanceGeometry | None = None,
            stain: StainEstimate | None = None) -> tuple[np.ndarray, InstanceGeometry]:
        """The crops of ``image``'s instances; with stain normalisation, ``stain`` is the estimate of the
        image's source (a dataset, a slide), else the image is its own source."""
        if self.stain_normalisation != "none":
            image = normalise_stain(image, self.stain_normalisation, stain)
        crops, geometry = cut_crops(image, instance_map, self.size, geometry, mask_channel=self.mask_channel,
                                    context=self.context)
        if self.context_view:
            crops = with_context_view(crops, image, geometry, self.context_view)
        return crops, geometry

    def text(self) -> str:
        """In words, for messages: "64 px crops with a wider view at 1/2 resolution"."""
        extras = ([f"a {self.context:g}x window"] if self.context != 1.0 else []) \
            + ([f"a wider view at 1/{self.context_view} resolution"] if self.context_view else []) \
            + (["the nucleus's mask as a channel"] if self.mask_channel else []) \
            + ([f"{self.stain_normalisation} stain normalisation"]
               if self.stain_normalisation not in (None, "none") else [])
        return f"{self.size} px crops" + (" with " + " and ".join(extras) if extras else "")

    def describe(self) -> dict:
        described = {"size": self.size, "mask_channel": self.mask_channel, "context": self.context,
                     "stain_normalisation": self.stain_normalisation}
        # Only when set, so that the crops cached and the checkpoints written before it keep their keys.
        if self.context_view:
            described["context_view"] = self.context_view
        return described


CONTEXT_VIEWS = (0, 2, 3, 4)   # 0: none; else the factor the image is shrunk by


def cut_crops(image: np.ndarray, instance_map: np.ndarray, size: int = CROP_SIZE,
              geometry: InstanceGeometry | None = None, *, mask_channel: bool = False,
              context: float = 1.0) -> tuple[np.ndarray, InstanceGeometry]:
    """Crops of every instance of ``instance_map``: (N, size, size, C) uint8, rows in id order; C is
    3 (RGB) or 4 with ``mask_channel`` (the nucleus's own pixels 255). ``context`` > 1 cuts a window
    ``context`` times wider and resizes it to ``size`` (see :class:`CropSpec`).

    Returns the crops and the geometry (ids, boxes, centroids) they were cut from.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
    if image.shape[:2] != instance_map.shape:
        raise ValueError(f"image {image.shape[:2]} and instance map {instance_map.shape} differ in size")
    if context < 1.0:
        raise ValueError(f"context must be at least 1, got {context}")
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if geometry is None:
        geometry = instance_geometry(instance_map)
    count = len(geometry.ids)
    channels = 4 if mask_channel else 3
    crops = np.empty((count, size, size, channels), np.uint8)
    if count == 0:
        return crops, geometry
    window = max(size, int(round(size * context)))
    top_left, side = crop_windows(geometry.bboxes, window)
    labels = np.ascontiguousarray(instance_map, dtype=np.int32) if mask_channel else None
    _cut_windows(crops, image, labels, geometry.ids, top_left, side, window)
    return crops, geometry


def with_context_view(crops: np.ndarray, image: np.ndarray, geometry: InstanceGeometry, factor: int) -> np.ndarray:
    """``crops`` (colours, then an optional mask) with the wider view's colours inserted after the colours:
    for each nucleus a window of the image shrunk ``factor`` times, as wide as the crop, around the same
    centre (a nucleus wider than that gets a square as wide as its extent, resized, as in the full view).

    The image is shrunk once (area averaging over whole ``factor x factor`` blocks, its edges mirrored up
    to a multiple of ``factor``), then the windows are slices of it, as the full view's are: far cheaper
    than cutting ``factor`` times wider windows and resizing each.
    """
    count, size, _, channels = crops.shape
    out = np.empty((count, size, size, channels + 3), np.uint8)
    if count == 0:
        return out
    height, width = image.shape[:2]
    grown = _mirror_extend(np.ascontiguousarray(image, dtype=np.uint8), -height % factor, -width % factor)
    shrunk = cv2.resize(grown, (grown.shape[1] // factor, grown.shape[0] // factor), interpolation=cv2.INTER_AREA)
    wide = np.empty((count, size, size, 3), np.uint8)
    top_left, side = crop_windows(geometry.bboxes, size, shrink=factor)
    _cut_windows(wide, shrunk, None, geometry.ids, top_left, side, size)
    # One channel shuffle by OpenCV over the crops as tall images: numpy's concatenate along the channel axis
    # copies pixel by pixel (40 ms for 1,150 crops, against 7).
    to_out = [0, 0, 1, 1, 2, 2, channels, 3, channels + 1, 4, channels + 2, 5] + ([3, 6] if channels == 4 else [])
    cv2.mixChannels([np.ascontiguousarray(crops).reshape(count * size, size, channels),
                     wide.reshape(count * size, size, 3)], [out.reshape(count * size, size, channels + 3)], to_out)
    return out


def _mirror_extend(image: np.ndarray, bottom: int, right: int) -> np.ndarray:
    """``image`` grown by ``bottom`` rows and ``right`` columns mirrored from its edges."""
    if not bottom and not right:
        return image
    height, width = image.shape[:2]
    return image[reflect_101(np.arange(height + bottom), height)][:, reflect_101(np.arange(width + right), width)]


def _cut_windows(crops: np.ndarray, image: np.ndarray, labels: np.ndarray | None, ids: np.ndarray,
                 top_left: np.ndarray, side: np.ndarray, window: int) -> None:
    """Fill ``crops`` (N, size, size, C) with the windows at ``top_left`` of side ``side`` of ``image``
    (and the target's mask from ``labels``), resized to ``size`` where the side is not."""
    size = crops.shape[1]
    height, width = image.shape[:2]
    mask_channel = labels is not None
    fits = side == window
    if fits.any():
        # Mirror-pad the image once (a window starts at most window/2 outside it), then copy each
        # window as a slice: a contiguous row copy per crop beats any fancy-indexed gather.
        pad = window
        padded = _mirror_pad(image, pad)
        padded_labels = _mirror_pad(labels, pad) if mask_channel else None
        rows = np.flatnonzero(fits)
        for start in range(0, len(rows), _BLOCK):
            block = rows[start:start + _BLOCK]
            _cut_block(crops, block, top_left[block] + pad, ids[block], padded, padded_labels, window)
    for index in np.flatnonzero(~fits):
        span = np.arange(side[index])
        rows = reflect_101(top_left[index, 0] + span, height)
        cols = reflect_101(top_left[index, 1] + span, width)
        window_labels = labels[rows[:, None], cols[None, :]] if mask_channel else None
        crops[index] = _finish(image[rows[:, None], cols[None, :]], window_labels, int(ids[index]), size)


def _mirror_pad(array: np.ndarray, pad: int) -> np.ndarray:
    height, width = array.shape[:2]
    if min(height, width) > pad:
        return cv2.copyMakeBorder(array, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    # A tiny image: the mirror folds more than once, which copyMakeBorder does not do.
    return array[reflect_101(np.arange(-pad, height + pad), height)][:, reflect_101(np.arange(-pad, width + pad), width)]


# Windows cut and resized together: bounded memory (256 x 96 x 96 x 4 bytes = 9 MB at context 1.5).
_BLOCK = 256


def _cut_block(crops: np.ndarray, rows: np.ndarray, corners: np.ndarray, ids: np.ndarray, padded: np.ndarray,
               padded_labels: np.ndarray | None, window: int) -> None:
    """Fill ``crops[rows]`` from windows of side ``window`` at ``corners`` of the padded image.

    Per crop there are only slice copies into contiguous buffers (a strided copy into a 4-channel
    array is several times slower); the channels are interleaved by one ``cv2.merge`` and the block is
    resized as one tall image: INTER_AREA maps row ``window * j`` to row ``size * j`` exactly, so no
    output pixel mixes two crops and the result equals resizing each crop on its own.
    """
    count, size = len(rows), crops.shape[1]
    corners = corners.tolist()
    if window == size and padded_labels is None:
        for row, (y, x) in zip(rows.tolist(), corners):
            crops[row] = padded[y:y + window, x:x + window]
        return
    colours = np.empty((count, window, window, 3), np.uint8)
    for k, (y, x) in enumerate(corners):
        colours[k] = padded[y:y + window, x:x + window]
    tall = colours.reshape(count * window, window, 3)
    if padded_labels is not None:
        mask = np.empty((count, window, window), np.uint8)
        is_target = mask.view(bool)
        for k, ((y, x), instance_id) in enumerate(zip(corners, ids.tolist())):
            np.equal(padded_labels[y:y + window, x:x + window], instance_id, out=is_target[k])
        mask *= np.uint8(255)
        tall = cv2.merge([tall, mask.reshape(count * window, window)])
    if window != size:
        # INTER_AREA averages when shrinking, so fine texture does not alias (and the mask's edge
        # becomes a partial-coverage value, as the pixels are).
        tall = cv2.resize(tall, (size, count * size), interpolation=cv2.INTER_AREA)
    crops[rows] = tall.reshape(count, size, size, -1)


def _finish(window: np.ndarray, window_labels: np.ndarray | None, instance_id: int, size: int) -> np.ndarray:
    """A window (and its labels) as one crop: the mask channel appended, resized to ``size``."""
    if window_labels is not None:
        mask = (window_labels == instance_id).view(np.uint8) * np.uint8(255)
        window = np.concatenate([window, mask[:, :, None]], axis=2)
    if window.shape[0] != size:
        # INTER_AREA averages when shrinking, so fine texture does not alias (and the mask's edge
        # becomes a partial-coverage value, as the pixels are).
        window = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)
    return window
