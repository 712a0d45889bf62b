"""Pictures of nuclei: class-coloured outlines over an image, with a legend, for reports and the web app."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mlcore.types import MISSING, LabelSet
from mlcore.writers import instance_contours

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def draw_overlay(image_rgb: np.ndarray, instance_map: np.ndarray, classes: dict[int, int], label_set: LabelSet | None,
                 unlabelled_color: tuple[int, int, int] = (200, 200, 200), thickness: int | None = None,
                 legend: bool = True) -> np.ndarray:
    """The image with each nucleus outlined in its class colour, and a legend below it.

    Outlines are the instances' outer contours (``thickness`` pixels, default 1, 2 on images over 1000
    px). The legend shows a swatch, the class name and the number of nuclei drawn for every class of
    ``label_set``, plus "unlabelled" when some nuclei have no class. Returns a new H' x W' x 3 uint8 image
    whose top-left H x W is the annotated image.
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
    if instance_map.shape != image_rgb.shape[:2]:
        raise ValueError(f"instance map {instance_map.shape} and image {image_rgb.shape[:2]} differ in size")
    if thickness is None:
        thickness = 2 if max(image_rgb.shape[:2]) > 1000 else 1
    n_classes = len(label_set) if label_set is not None else 0
    colors = [tuple(int(v) for v in c) for c in (label_set.colors if label_set else ())]
    by_class: dict[int, list[np.ndarray]] = {}
    counts = {index: 0 for index in range(n_classes)}
    for instance_id, pieces in instance_contours(instance_map).items():
        index = classes.get(instance_id, MISSING)
        key = index if 0 <= index < n_classes else MISSING
        by_class.setdefault(key, []).extend(piece.reshape(-1, 1, 2).astype(np.int32) for piece in pieces)
        counts[key] = counts.get(key, 0) + 1
    picture = np.ascontiguousarray(image_rgb.copy())
    # One drawContours call per class: thousands of nuclei cost a handful of calls.
    for index, contours in by_class.items():
        color = colors[index] if index != MISSING else tuple(int(v) for v in unlabelled_color)
        cv2.drawContours(picture, contours, -1, color, thickness, lineType=cv2.LINE_8)
    if not legend:
        return picture
    entries = [(f"{label_set.classes[i]} ({counts[i]})", colors[i]) for i in range(n_classes)]
    if counts.get(MISSING):
        entries.append((f"unlabelled ({counts[MISSING]})", tuple(int(v) for v in unlabelled_color)))
    return _with_legend(picture, entries)


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
    canvas = np.full((height + legend_height, canvas_width, 3), _BACKGROUND, np.uint8)
    canvas[:height, :width] = picture
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
