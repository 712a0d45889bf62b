"""Pictures of nuclei: class-coloured outlines over an image, with a legend, for reports and the web app."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mlcore.types import MISSING, LabelSet

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def default_thickness(shape: tuple[int, ...]) -> int:
    """1 pixel, 2 on images over 1000 px, where a 1-pixel line is hard to see at full view."""
    return 2 if max(shape[:2]) > 1000 else 1


class InstanceOutlines:
    """The boundary pixels of every instance of a map, found once and then coloured per label set.

    A pixel is on an instance's boundary when a pixel of another value (another instance, background or
    the outside of the image) lies within ``thickness`` steps of it (4-neighbour distance). That is the
    instance's outer contour drawn inside the instance, plus the rims of any holes. Finding them is a
    handful of whole-array comparisons, so an image with thousands of nuclei costs a few milliseconds,
    and every label set's overlay reuses the same pixels: only their colours differ.
    """

    def __init__(self, instance_map: np.ndarray, thickness: int | None = None):
        labels = np.asarray(instance_map)
        if labels.ndim != 2:
            raise ValueError(f"instance map must be 2-D, got shape {labels.shape}")
        self.shape = labels.shape
        self.thickness = thickness = default_thickness(self.shape) if thickness is None else int(thickness)
        if thickness < 1:
            raise ValueError(f"thickness must be at least 1, got {thickness}")
        # Signed, so that -1 can mark the outside of the image.
        small = labels.size == 0 or int(labels.max()) < 2**31
        labels = labels.astype(np.int32 if small else np.int64, copy=False)
        # -1 around the image: an instance touching the border gets a closed outline there.
        padded = np.pad(labels, thickness, constant_values=-1)
        height, width = self.shape
        edge = np.zeros(self.shape, bool)
        for dy in range(-thickness, thickness + 1):
            for dx in range(-thickness, thickness + 1):
                if 0 < abs(dy) + abs(dx) <= thickness:
                    edge |= padded[thickness + dy:thickness + dy + height, thickness + dx:thickness + dx + width] != labels
        edge &= labels != 0
        self.pixels = np.flatnonzero(edge)               # flat indices of boundary pixels
        self.owners = labels.ravel()[self.pixels]        # the instance each one belongs to
        self.ids = np.unique(self.owners)                # every instance has boundary pixels

    def draw(self, image_rgb: np.ndarray, ids: np.ndarray, labels: np.ndarray, label_set: LabelSet | None,
             unlabelled_color: tuple[int, int, int] = (200, 200, 200), legend: bool = True) -> np.ndarray:
        """The image with instance ``ids[i]`` outlined in the colour of class ``labels[i]`` of
        ``label_set``; instances not listed, or with a class outside it, in ``unlabelled_color``."""
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
        if image_rgb.shape[:2] != self.shape:
            raise ValueError(f"instance map {self.shape} and image {image_rgb.shape[:2]} differ in size")
        n_classes = len(label_set) if label_set is not None else 0
        ids = np.asarray(ids, np.int64).ravel()
        labels = np.asarray(labels, np.int64).ravel()
        top = int(self.ids[-1]) if self.ids.size else 0
        class_of = np.full(top + 1, MISSING, np.int64)
        listed = (ids >= 0) & (ids <= top)
        class_of[ids[listed]] = labels[listed]
        class_of[(class_of < 0) | (class_of >= n_classes)] = MISSING
        # Colour table: one row per class, the unlabelled colour last (so MISSING = -1 indexes it).
        table = np.array([*(label_set.colors if label_set else ()), unlabelled_color], np.uint8).reshape(-1, 3)
        picture = np.array(image_rgb, copy=True, order="C")
        picture.reshape(-1, 3)[self.pixels] = table[class_of[self.owners]]
        if not legend:
            return picture
        counts = np.bincount(class_of[self.ids] + 1, minlength=n_classes + 1)  # [unlabelled, class 0, ...]
        colors = [tuple(int(v) for v in c) for c in table]
        entries = [(f"{label_set.classes[i]} ({counts[i + 1]})", colors[i]) for i in range(n_classes)]
        if counts[0]:
            entries.append((f"unlabelled ({counts[0]})", colors[-1]))
        return _with_legend(picture, entries)


def draw_overlay(image_rgb: np.ndarray, instance_map: np.ndarray, classes: dict[int, int], label_set: LabelSet | None,
                 unlabelled_color: tuple[int, int, int] = (200, 200, 200), thickness: int | None = None,
                 legend: bool = True) -> np.ndarray:
    """The image with each nucleus outlined in its class colour, and a legend below it.

    ``classes`` maps instance id to class index in ``label_set``. Outlines are ``thickness`` pixels
    (default 1, 2 on images over 1000 px). The legend shows a swatch, the class name and the number of
    nuclei drawn for every class of ``label_set``, plus "unlabelled" when some nuclei have no class.
    Returns a new H' x W' x 3 uint8 image whose top-left H x W is the annotated image. To draw several
    label sets over one image, make one :class:`InstanceOutlines` and call its ``draw`` for each.
    """
    image_rgb = np.asarray(image_rgb)
    if np.shape(instance_map) != image_rgb.shape[:2]:
        raise ValueError(f"instance map {np.shape(instance_map)} and image {image_rgb.shape[:2]} differ in size")
    ids = np.fromiter(classes.keys(), np.int64, len(classes))
    labels = np.fromiter(classes.values(), np.int64, len(classes))
    return InstanceOutlines(instance_map, thickness).draw(image_rgb, ids, labels, label_set, unlabelled_color, legend)


def _with_legend(picture: np.ndarray, entries: list[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """Append a white margin below the picture with the legend entries laid out in rows."""
    height, width = picture.shape[:2]
    scale = float(np.clip(width / 600, 0.4, 1.2))  # about 10 px high text on a 256 px tile
    stroke = 1 if scale < 0.8 else 2
    (_, text_height), baseline = cv2.getTextSize("Ag", _FONT, scale, stroke)
    swatch = text_height + baseline
    pad = max(4, swatch // 2)
    row_height = swatch + pad
    widths = [swatch + pad // 2 + cv2.getTextSize(text, _FONT, scale, stroke)[0][0] for text, _ in entries]
    canvas_width = max(width, max(widths, default=0) + 2 * pad)
    # Flow layout: entries left to right, wrapping at the canvas width.
    positions, x, y = [], pad, pad
    for entry_width in widths:
        if x > pad and x + entry_width > canvas_width - pad:
            x, y = pad, y + row_height
        positions.append((x, y))
        x += entry_width + 2 * pad
    legend_height = y + row_height + pad // 2 if entries else 0
    # np.full with an RGB tuple fills element by element (9 ms for a 1000 x 1000 tile); broadcasting a
    # 3-vector into the margins only is a plain copy.
    canvas = np.empty((height + legend_height, canvas_width, 3), np.uint8)
    canvas[:height, :width] = picture
    background = np.array(_BACKGROUND, np.uint8)
    canvas[:height, width:] = background
    canvas[height:] = background
    for (text, color), (x, y) in zip(entries, positions):
        top = height + y
        cv2.rectangle(canvas, (x, top), (x + swatch - 1, top + swatch - 1), color, -1)
        cv2.rectangle(canvas, (x, top), (x + swatch - 1, top + swatch - 1), _TEXT, 1)
        cv2.putText(canvas, text, (x + swatch + pad // 2, top + text_height + (swatch - text_height - baseline) // 2),
                    _FONT, scale, _TEXT, stroke, cv2.LINE_AA)
    return canvas


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Save an RGB uint8 array as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8), "RGB").save(path, format="PNG")
    return path
