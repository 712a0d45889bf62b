"""Test and benchmark slides built from real tiles: no public slide is reachable from the test machines.

:func:`build_test_slide` stitches a few CoNSeP (or PanNuke) tiles from the shared data into one mosaic and
writes, for the same nuclei:

- the slide: a pyramidal tiled TIFF (or an Aperio SVS) at a known MPP (``mlcore.slides.write_pyramidal_tiff``);
- a QuPath GeoJSON of the nuclei with the dataset's class names and colours, outlines with every corner
  (they rasterise back to the mask's pixels);
- the instance mask as a tiled uint32 TIFF (ids 1..N in the GeoJSON's feature order);
- ``manifest.json``: where each tile lies, the label set, the MPP and the count.

Every nucleus is cleaned first: its largest 8-connected piece, holes that are background filled, so that a
polygon (which has one outer ring) and the mask describe the same pixels. With ``downsample=2`` the same
mosaic is written at half the resolution (a "20x" copy of a "40x" slide: twice the MPP), its mask
resampled by nearest neighbour.

:func:`build_benchmark_slide` writes a slide of any number of nuclei by repeating a pool of tiles, never
holding the slide, its GeoJSON or its mask in memory: the TIFF levels and the mask come from tile
generators, the GeoJSON is streamed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from mlcore.slide_nuclei import SlideNucleus, nuclei_from_instance_map, write_geojson_nuclei, write_label_tiff
from mlcore.slides import DEFAULT_MODEL_MPP, pyramid_level_sizes, write_pyramidal_tiff, write_pyramidal_tiff_tiles
from mlcore.types import LabelSet

_DATASETS = {"consep": ("hovernet", "consep"), "pannuke": ("coco", "pannuke")}
_EIGHT = np.ones((3, 3), bool)


@dataclass
class PoolTile:
    """One real tile, cleaned: RGB, instance map 1..n, class name per id, and its nuclei at offset 0."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    classes: dict[int, str]
    nuclei: list[SlideNucleus]


def clean_instances(instance_map: np.ndarray, classes: dict[int, int] | None = None
                    ) -> tuple[np.ndarray, dict[int, int]]:
    """Each instance reduced to its largest 8-connected piece, holes that are background filled, ids
    renumbered 1..N in the old id order (classes follow)."""
    classes = classes or {}
    labels = np.asarray(instance_map)
    clean = np.zeros(labels.shape, np.uint32)
    new_classes: dict[int, int] = {}
    next_id = 1
    for index, found in enumerate(ndimage.find_objects(labels)):
        if found is None:
            continue
        own = labels[found] == index + 1
        pieces, count = ndimage.label(own, structure=_EIGHT)
        if count > 1:
            own = pieces == (np.argmax(np.bincount(pieces.ravel())[1:]) + 1)
        filled = ndimage.binary_fill_holes(own) & ((labels[found] == 0) | own)
        region = clean[found]
        region[filled & (region == 0)] = next_id
        if index + 1 in classes:
            new_classes[next_id] = classes[index + 1]
        next_id += 1
    return clean, new_classes


def _reader(shared_data: Path, dataset: str):
    from mlcore.readers import open_dataset

    if dataset not in _DATASETS:
        raise ValueError(f"dataset {dataset!r}: expected one of {', '.join(_DATASETS)}")
    fmt, folder = _DATASETS[dataset]
    return open_dataset(fmt, Path(shared_data) / folder, name=dataset)


def load_pool(shared_data: Path, count: int, dataset: str = "consep", size: int = 256,
              downsample: float = 1.0) -> tuple[list[PoolTile], LabelSet]:
    """``count`` tiles spread over the dataset (every k-th), cut to ``size`` x ``size``, cleaned; with
    ``downsample`` > 1, reduced by that factor (image by area averaging, labels by nearest neighbour)."""
    reader = _reader(shared_data, dataset)
    label_set = reader.label_set
    picks = np.unique(np.linspace(0, len(reader) - 1, count).round().astype(int))
    pool = []
    for index in picks.tolist():
        item = reader.read(index)
        image, labels = item.image[:size, :size], item.instance_map[:size, :size]
        if image.shape[:2] != (size, size):
            continue
        if downsample != 1:
            side = round(size / downsample)
            image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
            labels = cv2.resize(labels.astype(np.float32), (side, side), interpolation=cv2.INTER_NEAREST).astype(np.int64)
        labels, classes = clean_instances(labels, item.classes)
        names = {i: label_set.classes[c] for i, c in classes.items() if 0 <= c < len(label_set.classes)}
        nuclei = [n for _, n in nuclei_from_instance_map(labels, classes=names, epsilon=0)]
        pool.append(PoolTile(item.name, np.ascontiguousarray(image), labels, names, nuclei))
    if len(pool) < count:
        raise ValueError(f"{dataset}: only {len(pool)} tiles of {size} x {size} pixels, {count} wanted")
    return pool, label_set


def _shifted(nucleus: SlideNucleus, dx: int, dy: int) -> SlideNucleus:
    x0, y0, x1, y1 = nucleus.bbox
    return SlideNucleus(outline=nucleus.outline + np.array([dx, dy], np.int32), bbox=(x0 + dx, y0 + dy, x1 + dx, y1 + dy),
                        centroid=(nucleus.centroid[0] + dx, nucleus.centroid[1] + dy), area=nucleus.area,
                        class_name=nucleus.class_name, measurements=nucleus.measurements)


def _color_of(label_set: LabelSet) -> Callable[[str | None], tuple[int, int, int] | None]:
    colors = dict(zip(label_set.classes, label_set.colors)) if label_set.colors else {}
    return lambda name: colors.get(name) if name is not None else None


def build_test_slide(shared_data: Path, out_dir: Path, mpp: float = DEFAULT_MODEL_MPP, svs: bool = False, *,
                     dataset: str = "consep", grid: tuple[int, int] = (4, 3), downsample: float = 1.0,
                     tile: int = 256, name: str = "fixture") -> dict[str, Path]:
    """A small slide of ``grid`` = (columns, rows) real tiles of 256 x 256 pixels (1024 x 768 by default,
    two pyramid levels, about 500 CoNSeP nuclei), with its GeoJSON, mask TIFF and manifest.

    ``mpp`` is the scale of the source tiles (CoNSeP and PanNuke: about 0.25); with ``downsample`` the
    slide is written ``downsample`` times smaller at ``mpp * downsample``. Returns ``{"slide", "geojson",
    "mask", "manifest"}`` paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns, rows = grid
    pool, label_set = load_pool(Path(shared_data), columns * rows, dataset, downsample=downsample)
    side = pool[0].image.shape[0]
    image = np.empty((rows * side, columns * side, 3), np.uint8)
    mask = np.zeros((rows * side, columns * side), np.uint32)
    nuclei: list[SlideNucleus] = []
    tiles = []
    for position, item in enumerate(pool):
        row, column = divmod(position, columns)
        x, y = column * side, row * side
        image[y:y + side, x:x + side] = item.image
        mask[y:y + side, x:x + side] = np.where(item.labels > 0, item.labels + len(nuclei), 0)
        nuclei.extend(_shifted(n, x, y) for n in item.nuclei)
        tiles.append({"name": item.name, "x": x, "y": y, "width": side, "height": side, "nuclei": len(item.nuclei)})
    slide_mpp = mpp * downsample
    paths = {"slide": out_dir / f"{name}.{'svs' if svs else 'tif'}", "geojson": out_dir / f"{name}.geojson",
             "mask": out_dir / f"{name}_mask.tif", "manifest": out_dir / f"{name}_manifest.json"}
    write_pyramidal_tiff(paths["slide"], image, mpp=slide_mpp, tile=tile, svs=svs)
    color = _color_of(label_set)
    write_geojson_nuclei(paths["geojson"], ((n, n.class_name, color(n.class_name)) for n in nuclei))
    write_label_tiff(paths["mask"], mask, tile=tile, mpp=slide_mpp)
    manifest = {"dataset": dataset, "mpp": slide_mpp, "downsample": downsample, "width": image.shape[1],
                "height": image.shape[0], "nuclei": len(nuclei),
                "label_set": {"name": label_set.name, "classes": list(label_set.classes),
                              "colors": [list(c) for c in label_set.colors]},
                "tiles": tiles}
    paths["manifest"].write_text(json.dumps(manifest, indent=1))
    return paths


# ------------------------------------------------------------------------------------------ benchmark slide

def build_benchmark_slide(out_dir: Path, n_nuclei: int = 500_000, *, shared_data: Path | None = None,
                          mpp: float = DEFAULT_MODEL_MPP, svs: bool = False, dataset: str = "consep",
                          pool_size: int = 48, with_mask: bool = True, tile: int = 256, name: str = "benchmark",
                          progress: Callable[[str, int, int], None] | None = None) -> dict[str, Path]:
    """A slide of at least ``n_nuclei`` nuclei: a square-ish grid of 256-pixel tiles, each one of a pool of
    ``pool_size`` real tiles (from ``shared_data``; synthetic tiles from :mod:`mlcore.synthetic` when it is
    None), with its GeoJSON (simplified outlines, as a QuPath export) and, with ``with_mask``, its mask TIFF.

    Nothing is whole in memory: each pyramid level is written from a tile generator (a level-k tile is
    assembled from the pool's tiles reduced 2^k times), the GeoJSON and the mask are streamed. ``progress(
    what, done, total)`` is called per grid row. Returns ``{"slide", "geojson", "mask", "manifest"}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if shared_data is not None:
        pool, label_set = load_pool(Path(shared_data), pool_size, dataset, size=tile)
    else:
        pool, label_set = _synthetic_pool(pool_size, tile)
    for item in pool:  # a benchmark GeoJSON has QuPath-like simplified outlines, not every corner
        item.nuclei = [n for _, n in nuclei_from_instance_map(item.labels, classes=item.classes)]
    per_tile = np.array([len(item.nuclei) for item in pool])
    if per_tile.sum() == 0:
        raise ValueError("the tile pool has no nuclei")
    positions_needed = math.ceil(n_nuclei / per_tile.mean())
    columns = max(1, math.ceil(math.sqrt(positions_needed)))
    rows = max(1, math.ceil(positions_needed / columns))

    def pick(row: int, column: int) -> int:  # a fixed scatter of the pool over the grid
        return (row * 7919 + column * 104729 + (row * column) % 13) % len(pool)

    while sum(int(per_tile[pick(r, c)]) for r in range(rows) for c in range(columns)) < n_nuclei:
        rows += 1
    width, height = columns * tile, rows * tile
    slide_mpp = mpp
    paths = {"slide": out_dir / f"{name}.{'svs' if svs else 'tif'}", "geojson": out_dir / f"{name}.geojson",
             "mask": out_dir / f"{name}_mask.tif", "manifest": out_dir / f"{name}_manifest.json"}
    levels = pyramid_level_sizes(width, height)
    if tile & (tile - 1) or (1 << (len(levels) - 1)) > tile:
        raise ValueError(f"tile {tile}: a power of two at least {1 << (len(levels) - 1)} (the coarsest level's factor)")
    reduced = {0: [item.image for item in pool]}
    for level in range(1, len(levels)):
        side = tile >> level
        reduced[level] = [cv2.resize(item.image, (side, side), interpolation=cv2.INTER_AREA) for item in pool]

    def level_tiles(level: int, level_width: int, level_height: int) -> Iterator[np.ndarray]:
        factor = 1 << level
        side = tile >> level
        for tile_row in range(math.ceil(level_height / tile)):
            if progress and level == 0:
                progress("slide", tile_row, rows)
            for tile_column in range(math.ceil(level_width / tile)):
                out = np.full((tile, tile, 3), 255, np.uint8)
                for dy in range(factor):
                    for dx in range(factor):
                        row, column = tile_row * factor + dy, tile_column * factor + dx
                        if row < rows and column < columns:
                            out[dy * side:(dy + 1) * side, dx * side:(dx + 1) * side] = reduced[level][pick(row, column)]
                yield out

    write_pyramidal_tiff_tiles(paths["slide"], width, height, level_tiles, mpp=slide_mpp, tile=tile, svs=svs,
                               compression_level=1)

    def nuclei() -> Iterator[tuple[SlideNucleus, str | None, tuple[int, int, int] | None]]:
        color = _color_of(label_set)
        for row in range(rows):
            if progress:
                progress("geojson", row, rows)
            for column in range(columns):
                for nucleus in pool[pick(row, column)].nuclei:
                    yield _shifted(nucleus, column * tile, row * tile), nucleus.class_name, color(nucleus.class_name)

    count = write_geojson_nuclei(paths["geojson"], nuclei())
    if with_mask:
        def mask_tiles() -> Iterator[np.ndarray]:
            offset = 0
            for row in range(rows):
                if progress:
                    progress("mask", row, rows)
                for column in range(columns):
                    item = pool[pick(row, column)]
                    yield np.where(item.labels > 0, item.labels.astype(np.uint32) + offset, 0).astype(np.uint32)
                    offset += len(item.nuclei)

        write_label_tiff(paths["mask"], mask_tiles(), shape=(height, width), tile=tile, mpp=slide_mpp)
    else:
        paths.pop("mask")
    manifest = {"dataset": dataset if shared_data is not None else "synthetic", "mpp": slide_mpp,
                "width": width, "height": height, "nuclei": count, "grid": [columns, rows],
                "label_set": {"name": label_set.name, "classes": list(label_set.classes),
                              "colors": [list(c) for c in label_set.colors]},
                "pool": [item.name for item in pool]}
    paths["manifest"].write_text(json.dumps(manifest, indent=1))
    return paths


def _synthetic_pool(count: int, tile: int) -> tuple[list[PoolTile], LabelSet]:
    from mlcore.synthetic import generate_nucleus_dataset

    data = generate_nucleus_dataset(n_images=count, nuclei_per_image=60, size=(tile, tile), name="synthetic", seed=7)
    label_set = data.label_set
    pool = []
    for item in data.images:
        labels, classes = clean_instances(item.instance_map, item.classes)
        names = {i: label_set.classes[c] for i, c in classes.items()}
        pool.append(PoolTile(item.name, item.image, labels, names, []))
    return pool, label_set
