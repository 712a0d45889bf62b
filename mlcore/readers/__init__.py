"""Dataset readers: every supported on-disk format -> :class:`mlcore.types.NucleusDataset`.

``read_dataset`` loads a whole dataset; ``open_dataset`` gives its label set and number of images first
and then streams the images one at a time (for large uploads and progress reporting). Malformed input
raises :class:`mlcore.types.DataError` naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mlcore.readers import coco, geojson, hovernet, pannuke, seed
from mlcore.readers._common import CONTENT_ERRORS, FormatSource, bounded_ids, read_rgb
from mlcore.types import AnnotatedImage, DataError, LabelSet, NucleusDataset

_MODULES = {"seed": seed, "hovernet": hovernet, "coco": coco, "geojson": geojson, "pannuke": pannuke}

# The one list of dataset formats (configs, the web app's upload choices and the writers use it).
FORMATS = tuple(_MODULES)

# What a format's files call one nucleus and several, in the reports of those left out (AnnotatedImage.left_out).
_NUCLEUS_NOUNS = {"geojson": ("feature", "features"), "coco": ("annotation", "annotations")}


def nucleus_noun(format: str) -> tuple[str, str]:
    """What the files of ``format`` call one nucleus and several: ``("feature", "features")`` for GeoJSON."""
    return _NUCLEUS_NOUNS.get(format, ("nucleus", "nuclei"))

__all__ = ["FORMATS", "DatasetReader", "open_dataset", "read_dataset", "iter_images", "read_rgb", "detect_format",
           "nucleus_noun"]


def _format_signs(root: Path) -> dict[str, bool]:
    """What each format's files look like at the top of a dataset folder (see each reader's layout)."""
    def has(folder: Path, pattern: str) -> bool:
        return folder.is_dir() and any(folder.glob(pattern))

    return {
        "seed": seed.has_masks(root) and (root / "images").is_dir(),
        "hovernet": bool(hovernet.label_files(root)),
        "coco": (root / coco.ANNOTATION_FILE).is_file(),
        "geojson": has(root, "*" + geojson.SUFFIX) or has(root / "images", "*" + geojson.SUFFIX),
        "pannuke": (root / "images.npy").is_file() and (root / "masks.npy").is_file(),
    }


def detect_format(path: str | Path) -> str:
    """The format of a dataset folder, told from its layout alone (no file is read).

    Exactly one format's signature files must be there: ``masks/`` (npy or label images) beside ``images/`` (seed),
    ``Labels/*.mat`` or HoVer-Net's output ``mat/``, ``json/`` (hovernet), ``annotations.json`` (coco),
    ``*.geojson`` in the folder or in ``images/`` (geojson), ``images.npy`` and ``masks.npy`` (pannuke). None,
    or more than one, raises a DataError that says what was looked for, so the user can choose the format
    instead.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, "not a folder, so the format cannot be told from its layout: choose the format")
    found = [name for name, present in _format_signs(root).items() if present]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(root, f"the files fit more than one format ({', '.join(found)}): choose the format")
    raise DataError(root, "the format could not be told from the files: expected masks/ and images/ (seed), "
                          "Labels/*.mat or HoVer-Net's mat/ or json/ (hovernet), annotations.json (coco), "
                          "*.geojson (geojson) or images.npy and masks.npy (pannuke) at the top of the dataset (its "
                          "folder or zip); choose the format")


class DatasetReader:
    """A dataset opened for streaming: ``label_set``, ``len()`` images, and iteration over them."""

    def __init__(self, format: str, path: Path, name: str, source: FormatSource):
        self.format = format
        self.path = path
        self.name = name
        self._source = source

    @property
    def label_set(self) -> LabelSet | None:
        return self._source.label_set

    def __len__(self) -> int:
        return len(self._source.items)

    def read(self, index: int) -> AnnotatedImage:
        """Image ``index`` (random access, e.g. from worker processes). Unlike iteration, it does not
        check that image names are unique across the dataset: a caller reading out of order does."""
        item = self._source.items[index]
        return bounded_ids(_guarded(self._source.item_path(item), self._source.read_item, item))

    def __iter__(self) -> Iterator[AnnotatedImage]:
        names: set[str] = set()
        for index in range(len(self)):
            image = self.read(index)
            if image.name in names:
                raise DataError(image.source_path, f"a second image is named {image.name!r} in this dataset")
            names.add(image.name)
            yield image


def _guarded(path: Path, function, *args):
    """Run a reader step; a content error NumPy or SciPy raises becomes a DataError naming the file."""
    try:
        return function(*args)
    except DataError:
        raise
    except CONTENT_ERRORS as exc:
        raise DataError(path, f"unreadable ({type(exc).__name__}: {exc})") from exc


def open_dataset(format: str, path: str | Path, name: str | None = None, class_names: list[str] | None = None,
                 label_set_name: str | None = None, labelled: bool = True) -> DatasetReader:
    """Open a dataset: validates the layout and the label set now, reads images when iterated."""
    if format not in _MODULES:
        raise DataError(path, f"unknown dataset format {format!r} (allowed: {', '.join(FORMATS)})")
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if class_names is not None:
        class_names = [str(n) for n in class_names]
    if name is None:
        name = path.parent.name if path.is_file() else path.resolve().name
    try:
        source = _guarded(path, _MODULES[format].open_source, path, class_names, label_set_name or name, labelled)
    except DataError as exc:
        fits = [other for other, present in _format_signs(path).items() if present] if path.is_dir() else []
        if type(exc) is not DataError or len(fits) != 1 or fits[0] == format:
            raise
        # The wrong format named for a folder whose layout is another's: the reader's words alone (a folder it
        # looked for) leave the user to guess why. No path in the problem: the web app shows it as it is.
        raise DataError(exc.path, f"{exc.problem}; the dataset folder is laid out as {fits[0]}, not {format}: "
                                  f"give the format {fits[0]}") from None
    return DatasetReader(format, path, name, source)


def iter_images(format: str, path: str | Path, class_names: list[str] | None = None,
                labelled: bool = True) -> Iterator[AnnotatedImage]:
    """Stream the images of a dataset (see :func:`open_dataset` to get its label set as well)."""
    return iter(open_dataset(format, path, class_names=class_names, labelled=labelled))


def read_dataset(format: str, path: str | Path, name: str | None = None, class_names: list[str] | None = None,
                 label_set_name: str | None = None, labelled: bool = True) -> NucleusDataset:
    """Read a whole dataset in one of :data:`FORMATS`.

    ``name`` defaults to the folder name, ``label_set_name`` to ``name``. ``class_names`` overrides (or,
    where the files carry none, supplies) the class names. ``labelled=False`` reads masks only: the
    dataset has no label set and every image an empty ``classes``.
    """
    reader = open_dataset(format, path, name=name, class_names=class_names, label_set_name=label_set_name,
                          labelled=labelled)
    return NucleusDataset(name=reader.name, format=format, label_set=reader.label_set, images=list(reader))
