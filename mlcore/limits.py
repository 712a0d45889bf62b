"""Size limits that every reader checks from file headers, before it allocates anything.

A dataset from elsewhere can declare a 16000 x 16000 mask in a 1 MB file, or an instance id of
2**31 - 1 on a 64 x 64 image; without these checks the reader would allocate gigabytes first. Each limit
comes from an environment variable of the same name, read when this module is imported.

- ``MAX_IMAGE_PIXELS``: pixels (H x W) of one image or instance mask (default 8192 x 8192). Pillow's
  own decompression-bomb guard is set to the same value.
- ``MAX_ARRAY_BYTES``: bytes of any other array decoded from a ``.npy`` or ``.mat`` file, such as a types
  table (default 1 GiB).
- ``MAX_JSON_BYTES``: size of one JSON file (``classes.json``, COCO annotations, GeoJSON; default 256 MiB;
  JSON takes several times its file size once parsed).

Instance ids need no limit of their own: a mask whose largest id exceeds its pixel count is renumbered
1..N in id order (see :func:`mlcore.readers._common.bounded_ids`), so nothing is ever sized by an id.
"""

from __future__ import annotations

import os


def _limit(variable: str, default: int) -> int:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise ValueError(f"{variable}={text!r}: expected a positive whole number") from None
    if value <= 0:
        raise ValueError(f"{variable}={text!r}: expected a positive whole number")
    return value


MAX_IMAGE_PIXELS = _limit("MAX_IMAGE_PIXELS", 8192 * 8192)
MAX_ARRAY_BYTES = _limit("MAX_ARRAY_BYTES", 1 << 30)
MAX_JSON_BYTES = _limit("MAX_JSON_BYTES", 256 << 20)


def megapixels(pixels: int) -> str:
    """A pixel count people read: "178,956,970 pixels, 179.0 megapixels", or only the count below a tenth of a
    megapixel (a limit lowered to 40,000 pixels read "0.0 megapixels")."""
    return f"{pixels:,} pixels, {pixels / 1e6:.1f} megapixels" if pixels >= 100_000 else f"{pixels:,} pixels"

# Whole slides (mlcore/slide_nuclei.py): a slide's nuclei are streamed, so these bound one nucleus and
# the count, not a file size.
# - ``MAX_SLIDE_NUCLEI``: nuclei (features) of one slide (default 5 million).
# - ``MAX_POLYGON_VERTICES``: vertices of one feature's rings together (default 65,536).
# - ``MAX_NUCLEUS_EXTENT``: width or height of one nucleus in level-0 pixels (default 2048: 512 um at
#   0.25 um/px, far beyond any nucleus; a tissue annotation exported by mistake is refused, not rasterised).
# - ``MAX_FEATURE_BYTES``: bytes of one GeoJSON feature as text (default 16 MiB), checked while it is parsed.
MAX_SLIDE_NUCLEI = _limit("MAX_SLIDE_NUCLEI", 5_000_000)
MAX_POLYGON_VERTICES = _limit("MAX_POLYGON_VERTICES", 65_536)
MAX_NUCLEUS_EXTENT = _limit("MAX_NUCLEUS_EXTENT", 2048)
MAX_FEATURE_BYTES = _limit("MAX_FEATURE_BYTES", 16 << 20)
