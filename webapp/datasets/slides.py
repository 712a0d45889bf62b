"""Whole-slide images in the web app: where an Image's slide file is, the open slide, and its Deep Zoom tiles.

The registration and import of a slide with its detections are in :mod:`webapp.datasets.slide_import`.

- :func:`slide_path` resolves an Image's ``slide_file`` under its root and refuses anything that would leave
  that root (``..``, absolute paths, symbolic links pointing out). Every reader of a slide (the viewer's
  tiles, imports, inference) goes through it. ``slides``: a path under SLIDES_ROOT, a share mounted on every
  host that reads slides. ``media``: an uploaded slide, a media name (:mod:`webapp.core.media`); OpenSlide
  needs a local file, so with ``STORAGE_URL`` set this host's mirror downloads it on first use.
- :func:`deep_zoom` keeps one ``openslide.deepzoom.DeepZoomGenerator`` per slide file open per process, in
  a small LRU, so that a tile does not reopen the slide (opening an SVS parses its whole TIFF directory).
- :class:`TileCache` keeps encoded tiles as files under ``DATA_DIR/cache/slide-tiles`` with a size cap,
  shared by every web process of a host, so a tile seen once answers from a file read. It is derived from
  the slide and local to each host: never in the media storage.

OpenSlide handles are thread-safe for reads (OpenSlide's documentation), and the generator's
arithmetic holds no state between calls; the LRU itself is guarded by a lock. An evicted handle is not
closed here: a request in another thread may still be reading from it, and OpenSlide-python closes it
when the last reference goes.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from mlcore.slides import SlideError, open_slide
from webapp.core import media

# Deep Zoom as OpenSeadragon and DSA serve it: 254-pixel tiles plus one pixel of overlap on each inner
# side (256 on the wire), only the slide's non-empty bounds where the scanner records them.
TILE_SIZE = 254
TILE_OVERLAP = 1
LIMIT_BOUNDS = True
TILE_FORMAT = "jpeg"
JPEG_QUALITY = 80
OPEN_SLIDES = 8  # DeepZoomGenerators kept open per process (a few file handles and OpenSlide caches each)
TILE_CACHE_DIR = "cache/slide-tiles"  # under DATA_DIR: a per-host cache, not media
CHECKSUM_SPAN = 1 << 20  # a slide's checksum reads its first and last MiB (and its size), not gigabytes


class SlidePathError(SlideError):
    """The slide of an image cannot be found or is outside its root; the message never names a server path."""


def slide_root_dir(root: str) -> Path:
    """The local folder a ``slide_root`` value stands for (``media``: this process's media work root, MEDIA_ROOT
    or the mirror); SlidePathError when it is unknown or not configured."""
    if root == "media":
        return media.root().resolve()
    if root == "slides":
        if not getattr(settings, "SLIDES_ROOT", None):
            raise SlidePathError("this server has no SLIDES_ROOT: slides registered by path cannot be read")
        return Path(settings.SLIDES_ROOT).resolve()
    raise SlidePathError(f"unknown slide root {root!r} (media or slides)")


def resolve_slide_file(root: str, relative: str, display_name: str = "") -> Path:
    """``relative`` under the folder of ``root`` as a real, existing file path; refuses an absolute path,
    ``..`` or a link that leads outside the root (SlidePathError naming ``display_name`` or ``relative``)."""
    name = display_name or relative
    base = slide_root_dir(root)
    if not relative or Path(relative).is_absolute() or "\x00" in relative:
        raise SlidePathError(f"{name}: a slide is named by a path relative to its root")
    if root == "media":
        try:
            local = media.local_path(media.clean_name(relative))  # remote: downloaded on first use
        except media.MediaNameError:
            raise SlidePathError(f"{name}: the path leads outside the slides folder") from None
        except FileNotFoundError:
            raise SlidePathError(f"{name}: the slide file is missing") from None
    else:
        local = base / relative
    path = local.resolve()
    if not path.is_relative_to(base):
        raise SlidePathError(f"{name}: the path leads outside the slides folder")
    if not path.is_file():
        raise SlidePathError(f"{name}: the slide file is missing")
    return path


def slide_path(image) -> Path:
    """The real path of ``image``'s slide (an :class:`~webapp.datasets.models.Image` with ``slide_file``)."""
    if not image.slide_file:
        raise SlidePathError(f"{image.name}: this image is not a whole-slide image")
    return resolve_slide_file(image.slide_root or "media", image.slide_file, image.name)


@lru_cache(maxsize=8)
def _open_cached(path: str, mtime_ns: int, display_name: str):
    return open_slide(path, display_name)


def open_image_slide(image):
    """The open slide (:class:`mlcore.slides.Slide`) of a slide Image, kept open for the next call (regions
    of one slide come in runs: crops for review, batches of an inference). Not to be closed by the caller."""
    path = slide_path(image)
    return _open_cached(str(path), path.stat().st_mtime_ns, image.name)


def slide_checksum(path: Path) -> str:
    """sha256 of the file's size and its first and last MiB: telling one slide from another without
    reading gigabytes (the same slide registered twice in a project is refused by it)."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"slide:{size}:".encode())
    with open(path, "rb") as source:
        digest.update(source.read(CHECKSUM_SPAN))
        if size > CHECKSUM_SPAN:
            source.seek(max(CHECKSUM_SPAN, size - CHECKSUM_SPAN))
            digest.update(source.read(CHECKSUM_SPAN))
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ deep zoom

@dataclass(frozen=True)
class OpenDeepZoom:
    generator: object  # openslide.deepzoom.DeepZoomGenerator
    version: str       # changes when the file does (size, mtime): part of tile ETags and cache keys


_open: OrderedDict[tuple, OpenDeepZoom] = OrderedDict()
_open_lock = threading.Lock()


def _file_version(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size:x}-{stat.st_mtime_ns:x}"


def _version_of(path: Path) -> str:
    return hashlib.sha1(f"{path}\0{_file_version(path)}".encode()).hexdigest()[:16]


def slide_version(image) -> str:
    """A short fingerprint of the slide file (its path, size and modification time), without opening it."""
    return _version_of(slide_path(image))


def deep_zoom(image, path: Path | None = None, version: str | None = None) -> OpenDeepZoom:
    """The Deep Zoom generator of ``image``'s slide, opened once per process (LRU of OPEN_SLIDES).
    ``path`` and ``version``: what :func:`slide_path` and :func:`slide_version` gave, when known."""
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    path = path or slide_path(image)
    version = version or _version_of(path)
    key = (str(path), version)
    with _open_lock:
        found = _open.get(key)
        if found is not None:
            _open.move_to_end(key)
            return found
    # Opened outside the lock: another thread's tile need not wait for this open. Two threads may open the
    # same slide at once; the second entry replaces the first, which is then freed.
    try:
        slide = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlidePathError(f"{image.name}: the slide cannot be read ({type(exc).__name__})") from exc
    entry = OpenDeepZoom(DeepZoomGenerator(slide, tile_size=TILE_SIZE, overlap=TILE_OVERLAP,
                                           limit_bounds=LIMIT_BOUNDS), version)
    with _open_lock:
        _open[key] = entry
        _open.move_to_end(key)
        while len(_open) > OPEN_SLIDES:
            _open.popitem(last=False)
    return entry


def forget_open_slides() -> None:
    """Drop every open generator of this process (tests; a slide file replaced under the same name is
    noticed anyway through its size and modification time)."""
    with _open_lock:
        _open.clear()


def dzi_xml(image) -> str:
    return deep_zoom(image).generator.get_dzi(TILE_FORMAT)


def tile_exists(generator, level: int, col: int, row: int) -> bool:
    if not 0 <= level < generator.level_count:
        return False
    cols, rows = generator.level_tiles[level]
    return 0 <= col < cols and 0 <= row < rows


def render_tile(generator, level: int, col: int, row: int) -> bytes:
    tile = generator.get_tile(level, (col, row))
    buffer = io.BytesIO()
    tile.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ tile cache

class TileCache:
    """Encoded tiles as files: ``<DATA_DIR>/cache/slide-tiles/<image id>/<slide version>/<level>/<col>_<row>.jpeg``.

    Written to a temporary name and renamed, so a reader never sees half a tile. Every ``PRUNE_EVERY``
    writes of a process, the folder's size is summed and the least recently written tiles are removed
    until it is under 80 % of ``SLIDE_TILE_CACHE_BYTES``. A slide replaced by a new file gets a new version
    folder; the old one ages out the same way.
    """

    PRUNE_EVERY = 500

    def __init__(self):
        self._writes = 0
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return Path(settings.DATA_DIR) / TILE_CACHE_DIR

    @property
    def limit(self) -> int:
        return int(getattr(settings, "SLIDE_TILE_CACHE_BYTES", 2 * 1024**3))

    def path(self, image_id: int, version: str, level: int, col: int, row: int) -> Path:
        return self.root / str(image_id) / version / str(level) / f"{col}_{row}.{TILE_FORMAT}"

    def get(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def put(self, path: Path, content: bytes) -> None:
        if self.limit <= 0:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_bytes(content)
            os.replace(temporary, path)
        except OSError:
            return  # a full disk or a removed folder costs the cache, never the tile
        with self._lock:
            self._writes += 1
            due = self._writes % self.PRUNE_EVERY == 0
        if due:
            self.prune()

    def prune(self) -> int:
        """Remove the oldest tiles until the cache is under 80 % of its limit; returns the bytes removed."""
        files = []
        total = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                try:
                    stat = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                files.append((stat.st_mtime_ns, stat.st_size, os.path.join(folder, name)))
                total += stat.st_size
        if total <= self.limit:
            return 0
        removed, target = 0, int(self.limit * 0.8)
        for _, size, name in sorted(files):
            if total - removed <= target:
                break
            try:
                os.remove(name)
                removed += size
            except OSError:
                pass
        return removed

    def size(self) -> int:
        return sum(os.path.getsize(os.path.join(folder, name))
                   for folder, _, names in os.walk(self.root) for name in names)


tile_cache = TileCache()


def remove_cached_tiles(image_id: int) -> None:
    """Remove an image's cached tiles on this host (when the image or its dataset is deleted; on other web
    hosts, and otherwise, they age out under the size cap: an image id is never reused)."""
    import shutil

    shutil.rmtree(tile_cache.root / str(int(image_id)), ignore_errors=True)


def tile_bytes(image, level: int, col: int, row: int) -> tuple[bytes, str] | None:
    """A tile's JPEG and its ETag, from the cache or rendered (and cached); None when the tile does not
    exist. The cache is looked up before the slide is opened: a cached tile costs a stat and a file read."""
    source = slide_path(image)
    version = _version_of(source)
    etag = f'"{image.pk}-{version}-{level}-{col}-{row}"'
    path = tile_cache.path(image.pk, version, level, col, row)
    cached = tile_cache.get(path)
    if cached is not None:
        return cached, etag
    generator = deep_zoom(image, source, version).generator
    if not tile_exists(generator, level, col, row):
        return None
    content = render_tile(generator, level, col, row)
    tile_cache.put(path, content)
    return content, etag
