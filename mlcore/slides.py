"""Whole-slide images: one small reader interface over OpenSlide, and a pyramidal-TIFF writer for test slides.

The web app and the CLI read slides only through :func:`open_slide`: a region at a pyramid level, the
dimensions, the levels and the microns per pixel (MPP). OpenSlide (through the ``openslide-bin`` wheel, no
system library) reads SVS, NDPI, MRXS, generic tiled TIFF and DICOM. Coordinates are level-0 pixels, as
in OpenSlide, QuPath and their GeoJSON exports.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CoNSeP and PanNuke were scanned at 40x: about 0.25 micron per pixel. A model trained on them sees nuclei
# at this scale; a slide at another MPP is resampled to it before its crops are cut.
DEFAULT_MODEL_MPP = 0.25
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu", ".dcm")
MAX_REGION_PIXELS = 64 * 1024 * 1024  # one read; a caller that wants more reads it in pieces
# The most reduced level is what a preview, a thumbnail and the viewer's zoomed-out tiles read whole: a slide
# without a pyramid (one level of 100,000 x 100,000) ran its import out of memory and took seconds and a
# gigabyte per tile in the viewer. Scanners' slides end at a few thousand pixels a side (an Aperio 40x slide
# of 100,000 x 80,000 at 6,250 x 5,000).
MAX_LOWEST_LEVEL_PIXELS = 8192 * 8192


class SlideError(ValueError):
    """A slide that cannot be read; the message names the user's file, never a server path."""


@dataclass(frozen=True)
class SlideInfo:
    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None  # microns per level-0 pixel (x; slides have square pixels), None when not recorded
    vendor: str

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def best_level_for(self, downsample: float) -> int:
        """The most reduced level that is still at least as detailed as ``downsample`` asks."""
        best = 0
        for level, factor in enumerate(self.level_downsamples):
            if factor <= downsample * 1.0001:
                best = level
        return best

    def as_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "mpp": self.mpp, "vendor": self.vendor,
                "level_dimensions": [list(d) for d in self.level_dimensions],
                "level_downsamples": list(self.level_downsamples)}


class Slide:
    """An open slide. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: Path, display_name: str):
        import openslide

        self.name, self._path = display_name, Path(path)
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise SlideError(f"{display_name}: not a slide format OpenSlide reads (SVS, NDPI, MRXS, "
                             "tiled TIFF, DICOM)") from exc
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideError(f"{display_name}: cannot be read as a slide ({_public(exc, path)})") from exc
        props = self._slide.properties
        mpp = props.get("openslide.mpp-x") or props.get("openslide.mpp-y")
        try:
            mpp_value = float(mpp) if mpp else None
        except ValueError:
            mpp_value = None
        if mpp_value is not None and not (0.01 <= mpp_value <= 100):
            mpp_value = None  # a TIFF with a default resolution of 1 dpi is no statement of scale
        lowest_w, lowest_h = self._slide.level_dimensions[-1]
        if lowest_w * lowest_h > MAX_LOWEST_LEVEL_PIXELS:
            levels = self._slide.level_count
            self._slide.close()
            raise SlideError(f"{display_name}: its most reduced level is {lowest_w:,} x {lowest_h:,} pixels "
                             f"({levels} level{'s' if levels != 1 else ''}); a slide needs a pyramid whose smallest "
                             f"level has at most {MAX_LOWEST_LEVEL_PIXELS:,} pixels to be previewed and shown. "
                             "Write one with libvips (vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg) "
                             "or QuPath's OME-TIFF export")
        width, height = self._slide.dimensions
        self.info = SlideInfo(width=int(width), height=int(height),
                              level_dimensions=tuple((int(w), int(h)) for w, h in self._slide.level_dimensions),
                              level_downsamples=tuple(float(d) for d in self._slide.level_downsamples),
                              mpp=mpp_value, vendor=props.get("openslide.vendor", "unknown"))

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) of ``level``, its top left at level-0 pixel (x, y); outside the
        slide and transparent pixels are white (the glass)."""
        if not 0 <= level < self.info.level_count:
            raise SlideError(f"{self.name}: no pyramid level {level} (it has {self.info.level_count})")
        if width <= 0 or height <= 0 or width * height > MAX_REGION_PIXELS:
            raise SlideError(f"{self.name}: a region of {width} x {height} pixels cannot be read at once")
        with self._reading(f"the region at ({x}, {y}) of level {level}"):
            rgba = np.asarray(self._slide.read_region((int(x), int(y)), level, (int(width), int(height))))
        if rgba[..., 3].min() == 255:  # opaque, as inside the scanned area: no blending to pay for
            return np.ascontiguousarray(rgba[..., :3])
        alpha = rgba[..., 3:4].astype(np.uint16)
        rgb = (rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha)) // 255
        return rgb.astype(np.uint8)

    def read_scaled(self, x: int, y: int, width: int, height: int, downsample: float) -> np.ndarray:
        """The level-0 box (x, y, width, height) at ``downsample`` (level-0 pixels per output pixel): read
        from the nearest more detailed level, then resized (area averaging when shrinking)."""
        import cv2

        out_w = max(1, round(width / downsample))
        out_h = max(1, round(height / downsample))
        level = self.info.best_level_for(downsample)
        factor = self.info.level_downsamples[level]
        region = self.read_region(level, x, y, max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor)))
        if region.shape[1] == out_w and region.shape[0] == out_h:
            return region
        shrinking = region.shape[1] > out_w
        return cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def thumbnail(self, max_size: int = 512) -> np.ndarray:
        with self._reading("its overview"):
            return np.asarray(self._slide.get_thumbnail((max_size, max_size)).convert("RGB"))

    @contextmanager
    def _reading(self, what: str):
        """OpenSlide's errors on a damaged file (a tile that does not decode) as a SlideError naming the slide,
        which a job shows as it is, rather than a library's exception and line."""
        import openslide

        try:
            yield
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{self.name}: {what} could not be read; the file may be damaged "
                             f"(OpenSlide: {_public(exc, self._path)[:200]})") from exc

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_slide(path: str | Path, display_name: str | None = None) -> Slide:
    path = Path(path)
    name = display_name or path.name
    if not path.is_file():
        raise SlideError(f"{name}: no such file")
    return Slide(path, name)


def scale_to_model(slide_mpp: float | None, model_mpp: float | None = DEFAULT_MODEL_MPP) -> float:
    """Slide pixels per model pixel: 2.0 for a 0.25 um/px model on a 0.5 um/px (20x) slide is 0.5, i.e.
    the slide is upsampled; 1.0 when either side does not record its scale."""
    if not slide_mpp or not model_mpp:
        return 1.0
    return model_mpp / slide_mpp


def _public(exc: Exception, path: Path) -> str:
    return str(exc).replace(str(path), path.name)


# ------------------------------------------------------------------------------------ writing test slides

def write_pyramidal_tiff(path: str | Path, image: np.ndarray, mpp: float = DEFAULT_MODEL_MPP, tile: int = 256,
                         min_level_size: int = 512, svs: bool = False, compression: str = "zlib") -> Path:
    """Write an RGB image as a tiled, pyramidal TIFF (each level half the previous one) that OpenSlide
    reads as a generic tiled TIFF, or, with ``svs``, as an Aperio SVS (the ImageDescription Aperio
    writes, with its MPP). The resolution tags carry ``mpp``. For test slides and benchmarks."""
    import cv2
    import tifffile

    path = Path(path)
    levels = [np.ascontiguousarray(image[..., :3])]
    while max(levels[-1].shape[:2]) // 2 >= min_level_size:
        previous = levels[-1]
        levels.append(cv2.resize(previous, (previous.shape[1] // 2, previous.shape[0] // 2),
                                 interpolation=cv2.INTER_AREA))
    height, width = image.shape[:2]
    pixels_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 2**31) as tif:
        for index, level in enumerate(levels):
            factor = width / level.shape[1]
            description = _svs_description(width, height, level.shape[1], level.shape[0], tile, mpp, index) if svs else None
            tif.write(level, tile=(tile, tile), photometric="rgb", compression=compression,
                      resolution=(pixels_per_cm / factor, pixels_per_cm / factor), resolutionunit="CENTIMETER",
                      subfiletype=1 if index else 0, description=description, metadata=None)
    return path


def _svs_description(width: int, height: int, level_width: int, level_height: int, tile: int, mpp: float,
                     index: int) -> str:
    """The ImageDescription Aperio writes on each level, which OpenSlide reads the vendor and MPP from."""
    if index:
        return (f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] "
                f"({tile}x{tile}) -> {level_width}x{level_height}|AppMag = 40|MPP = {mpp}")
    return f"Aperio Image Library v12.0.0\r\n{width}x{height} ({tile}x{tile}) |AppMag = 40|MPP = {mpp}"


def pyramid_level_sizes(width: int, height: int, min_level_size: int = 512) -> list[tuple[int, int]]:
    """(width, height) of each level :func:`write_pyramidal_tiff` writes: halved while the larger side of
    the next level stays at least ``min_level_size``."""
    sizes = [(width, height)]
    while max(sizes[-1]) // 2 >= min_level_size:
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


def write_pyramidal_tiff_tiles(path: str | Path, width: int, height: int, tiles_of_level, mpp: float = DEFAULT_MODEL_MPP,
                               tile: int = 256, min_level_size: int = 512, svs: bool = False,
                               compression: str = "zlib", compression_level: int | None = None) -> Path:
    """:func:`write_pyramidal_tiff` for a slide that is never whole in memory: ``tiles_of_level(level,
    level_width, level_height)`` yields the level's ``tile x tile x 3`` uint8 tiles in row-major order
    (tiles past the right or bottom edge are cut by the writer). Levels as :func:`pyramid_level_sizes`."""
    import tifffile

    path = Path(path)
    pixels_per_cm = 1e4 / mpp
    args = {"level": compression_level} if compression_level is not None else None
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tif:
        for index, (level_width, level_height) in enumerate(pyramid_level_sizes(width, height, min_level_size)):
            factor = width / level_width
            description = _svs_description(width, height, level_width, level_height, tile, mpp, index) if svs else None
            tif.write(tiles_of_level(index, level_width, level_height), shape=(level_height, level_width, 3),
                      dtype=np.uint8, tile=(tile, tile), photometric="rgb", compression=compression,
                      compressionargs=args, resolution=(pixels_per_cm / factor, pixels_per_cm / factor),
                      resolutionunit="CENTIMETER", subfiletype=1 if index else 0, description=description,
                      metadata=None)
    return path
