"""Synthetic H&E-like tiles with labelled nuclei, for demos, tests and scale benchmarks.

Each class has its own look (size, elongation, darkness, chromatin texture and hue, jittered per
nucleus) so a classifier can learn the classes from appearance alone; the training tests rely on it.
Nuclei are filled ellipses drawn with cv2.ellipse on small patches; colouring is done for the whole tile
at once through per-instance lookup tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mlcore.types import AnnotatedImage, LabelSet, NucleusDataset


@dataclass(frozen=True)
class NucleusStyle:
    """How nuclei of one class look: mean semi-major axis (px), axis ratio, darkness 0..1, chromatin
    texture 0..1, hue 0 (purple) .. 1 (blue)."""

    radius: float
    aspect: float
    darkness: float
    texture: float
    hue: float


# Archetypes loosely modelled on real nuclei; each differs from the others in at least two traits.
STYLES: dict[str, NucleusStyle] = {
    "small_dark": NucleusStyle(4.5, 1.05, 0.95, 0.05, 0.1),      # lymphocyte-like
    "large_pale": NucleusStyle(9.5, 1.25, 0.45, 0.50, 0.5),      # vesicular tumour-like
    "spindle": NucleusStyle(6.5, 3.2, 0.75, 0.15, 0.8),          # fibroblast-like
    "oval": NucleusStyle(7.0, 1.6, 0.65, 0.25, 0.3),
    "large_dark": NucleusStyle(11.0, 1.1, 0.85, 0.10, 1.0),
    "elongated_pale": NucleusStyle(6.0, 2.2, 0.40, 0.05, 0.6),
    "textured_dark": NucleusStyle(8.0, 1.0, 0.85, 0.45, 0.2),
    "textured_pale": NucleusStyle(5.5, 1.5, 0.50, 0.55, 0.9),
}
_STYLE_LIST = list(STYLES.values())

_EOSIN = np.array([232, 160, 200], np.float32)         # stroma pink
_EOSIN_LIGHT = np.array([247, 222, 238], np.float32)   # loose tissue / lumen
_HEMATOXYLIN_PALE = np.array([175, 135, 205], np.float32)
_HEMATOXYLIN_DARK = np.array([70, 30, 110], np.float32)
_BLUE_SHIFT = np.array([-30, 0, 15], np.float32)        # added at hue 1: purple -> blue


def default_class_names(n_classes: int) -> list[str]:
    names = list(STYLES)
    return [names[k % len(names)] + ("" if k < len(names) else f"_{k // len(names)}") for k in range(n_classes)]


def class_style(index: int) -> NucleusStyle:
    """Style of class ``index``; past the archetypes they repeat, larger each round so they stay distinct."""
    base = _STYLE_LIST[index % len(_STYLE_LIST)]
    return NucleusStyle(base.radius * (1 + 0.35 * (index // len(_STYLE_LIST))), base.aspect, base.darkness,
                        base.texture, base.hue)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Noise in -1..1 varying over about ``cell`` pixels: random grid upsampled with bicubic interpolation."""
    grid = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) / 2, -1, 1)


def _place_nuclei(rng: np.random.Generator, height: int, width: int, labels: np.ndarray,
                  max_overlap: float = 0.1, attempts: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Draw one jittered ellipse per requested nucleus; returns the instance map and the placed labels.

    A nucleus whose candidate ellipses all overlap earlier ones by more than ``max_overlap`` is skipped,
    so a crowded tile gets fewer nuclei than asked for.
    """
    instance_map = np.zeros((height, width), np.int32)
    placed: list[int] = []
    n = labels.size
    size_jitter = rng.lognormal(0.0, 0.12, n)
    aspect_jitter = 1 + 0.12 * rng.standard_normal(n)
    angles = rng.uniform(0, 180, n)
    styles = {int(c): class_style(int(c)) for c in np.unique(labels)}
    for i in range(n):
        style = styles[int(labels[i])]
        major = max(2.0, style.radius * size_jitter[i])
        minor = max(1.5, major / max(1.0, style.aspect * aspect_jitter[i]))
        reach = int(np.ceil(major)) + 1
        for _ in range(attempts):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            x0, y0 = max(int(cx) - reach, 0), max(int(cy) - reach, 0)
            x1, y1 = min(int(cx) + reach + 1, width), min(int(cy) + reach + 1, height)
            if x1 <= x0 or y1 <= y0:
                continue
            patch = np.zeros((y1 - y0, x1 - x0), np.uint8)
            # Sub-pixel centre and axes (shift=4) so sizes vary continuously.
            cv2.ellipse(patch, (int((cx - x0) * 16), int((cy - y0) * 16)), (int(major * 16), int(minor * 16)),
                        float(angles[i]), 0, 360, 1, -1, cv2.LINE_8, 4)
            area = cv2.countNonZero(patch)
            if area < 4:
                continue
            region = instance_map[y0:y1, x0:x1]
            free = patch.view(bool) & (region == 0)
            if area - np.count_nonzero(free) > max_overlap * area:
                continue
            region[free] = len(placed) + 1
            placed.append(int(labels[i]))
            break
    return instance_map, np.array(placed, np.int64)


def generate_tile(rng: np.random.Generator, size: tuple[int, int] = (256, 256), n_nuclei: int = 60,
                  n_classes: int = 3, class_probs: Sequence[float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """One H&E-like tile: ``(image H x W x 3 uint8 RGB, instance map H x W int32, {id: class index})``.

    Ids are 1..N in placement order; N can fall short of ``n_nuclei`` when the tile is too crowded.
    """
    height, width = size
    labels = rng.choice(n_classes, size=n_nuclei, p=class_probs)
    instance_map, placed = _place_nuclei(rng, height, width, labels)
    n = placed.size

    # Colour planes are channel-first (3 x H x W): NumPy broadcasts a trailing axis of 3 slowly.
    # Eosin background: pink stroma with lighter patches and fibre-like fine texture.
    light = np.clip(_smooth_noise(rng, height, width, 48) * 0.9 + 0.15, 0, 1)
    image = _EOSIN[:, None, None] + (_EOSIN_LIGHT - _EOSIN)[:, None, None] * light
    image += _smooth_noise(rng, height, width, 6) * 10

    # Per-instance colour and texture strength, looked up for every pixel at once (entry 0 = background).
    styles = [class_style(int(c)) for c in placed]
    jitter = rng.standard_normal((3, n)).astype(np.float32)
    darkness = np.clip(np.array([s.darkness for s in styles], np.float32) + 0.05 * jitter[0], 0, 1)
    hue = np.clip(np.array([s.hue for s in styles], np.float32) + 0.08 * jitter[1], 0, 1)
    colors = np.zeros((3, n + 1), np.float32)
    colors[:, 1:] = (_HEMATOXYLIN_PALE[:, None] + (_HEMATOXYLIN_DARK - _HEMATOXYLIN_PALE)[:, None] * darkness
                     + _BLUE_SHIFT[:, None] * hue)
    texture = np.zeros(n + 1, np.float32)
    texture[1:] = np.clip(np.array([s.texture for s in styles], np.float32) + 0.04 * jitter[2], 0, 1) * 70
    color = np.take(colors, instance_map, axis=1)
    color += _smooth_noise(rng, height, width, 2) * np.take(texture, instance_map)  # chromatin
    # Slightly soft nucleus edges, as in a real section.
    alpha = cv2.GaussianBlur((instance_map > 0).astype(np.float32), (0, 0), 0.7)
    image += (color - image) * alpha
    image += 3 * rng.standard_normal((height, width), dtype=np.float32)  # grain
    image = cv2.GaussianBlur(cv2.merge(list(image)), (0, 0), 0.5)
    image = np.clip(image, 0, 255).astype(np.uint8)
    classes = {i + 1: int(c) for i, c in enumerate(placed)}
    return image, instance_map, classes


def generate_nucleus_dataset(n_images: int = 8, nuclei_per_image: int = 60, class_names: Sequence[str] | None = None,
                             seed: int = 0, size: tuple[int, int] = (256, 256), name: str = "synthetic",
                             unlabelled_fraction: float = 0.0, n_classes: int = 3) -> NucleusDataset:
    """An in-memory synthetic dataset (format ``"synthetic"``).

    ``class_names`` defaults to the first ``n_classes`` style names; ``unlabelled_fraction`` of the
    nuclei (chosen at random) are left without a class, like missing labels in real data.
    """
    names = list(class_names) if class_names is not None else default_class_names(n_classes)
    label_set = LabelSet(name, tuple(names))
    rng = np.random.default_rng(seed)
    images = []
    for index in range(n_images):
        image, instance_map, classes = generate_tile(rng, size, nuclei_per_image, len(names))
        if unlabelled_fraction > 0 and classes:
            drop = rng.random(len(classes)) < unlabelled_fraction
            classes = {i: c for (i, c), gone in zip(classes.items(), drop) if not gone}
        images.append(AnnotatedImage(name=f"tile_{index:04d}", image=image, instance_map=instance_map,
                                     classes=classes))
    return NucleusDataset(name=name, format="synthetic", label_set=label_set, images=images)


def generate_dataset(root: str | Path, format: str = "seed", n_images: int = 8, nuclei_per_image: int = 60,
                     class_names: Sequence[str] | None = None, seed: int = 0, size: tuple[int, int] = (256, 256),
                     unlabelled_fraction: float = 0.0) -> Path:
    """Write a synthetic dataset to ``root`` in a reader format (seed, coco, hovernet, geojson, pannuke).

    ``mlcore.readers.read_dataset(format, root)`` reads back exactly the generated nuclei (COCO masks
    are stored as RLE, so nothing is lost). Returns ``root``.
    """
    from mlcore.writers import write_dataset  # writers import the readers' conventions; keep this module light

    dataset = generate_nucleus_dataset(n_images, nuclei_per_image, class_names, seed, size,
                                       name=Path(root).name, unlabelled_fraction=unlabelled_fraction)
    return write_dataset(dataset, format, root)
