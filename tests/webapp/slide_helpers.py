"""A small fixture slide (pyramidal TIFF at 0.25 um/px) and its QuPath GeoJSON detections, for the slide tests.

The nuclei are axis-aligned rectangles, so their stored rows are known exactly. The GeoJSON rasteriser
(mlcore.readers._common.polygon_mask, shared with the tile GeoJSON reader) fills the pixels whose centres a
polygon holds, as QuPath does: a ring from (x, y) to (x + w, y + h) covers pixels x..x+w-1 and y..y+h-1, so
the stored box is (x, y, x + w, y + h) and the area w * h.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlcore.slides import write_pyramidal_tiff

WIDTH, HEIGHT = 1200, 900
CLASSES = ("Tumor", "Immune cells")  # in order of first appearance in the file


@dataclass
class FixtureSlide:
    slide: Path
    geojson: Path
    boxes: list[tuple[int, int, int, int]]      # x0, y0, x1, y1 per nucleus, in file order
    classes: list[str | None]                   # per nucleus, in file order
    pixels: np.ndarray


def build_fixture_slide(folder: Path, columns: int = 9, rows: int = 7) -> FixtureSlide:
    """A slide of ``columns * rows`` nuclei: every third Tumor, every third Immune cells, every third
    unclassified. Each nucleus is a dark rectangle on pink tissue."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(17)
    pixels = np.full((HEIGHT, WIDTH, 3), (235, 200, 220), np.uint8)
    features, boxes, classes = [], [], []
    for row in range(rows):
        for column in range(columns):
            number = row * columns + column
            x, y = 40 + column * 125 + int(rng.integers(0, 20)), 40 + row * 120 + int(rng.integers(0, 20))
            w, h = 14 + number % 7, 12 + number % 5
            pixels[y:y + h, x:x + w] = (90, 40, 120) if number % 3 == 0 else (60, 30, 90)
            class_name = (CLASSES[0], CLASSES[1], None)[number % 3]
            properties = {"objectType": "detection"}
            if class_name is not None:
                properties["classification"] = {"name": class_name, "color": [200, 0, 0] if number % 3 == 0
                                                else [0, 0, 200]}
            ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                             "properties": properties})
            boxes.append((x, y, x + w, y + h))
            classes.append(class_name)
    slide = write_pyramidal_tiff(folder / "case-1.tif", pixels, mpp=0.25, tile=256, min_level_size=256)
    geojson = folder / "case-1.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return FixtureSlide(slide=slide, geojson=geojson, boxes=boxes, classes=classes, pixels=pixels)
