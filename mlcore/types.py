"""The data types every part of mlcore (and the web app) exchanges.

Readers produce :class:`AnnotatedImage` objects grouped under a :class:`LabelSet`; the training
code turns them into crops and a label matrix with one column per label set (``-1`` = missing).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MISSING = -1  # class index of a label set whose class is unknown for a nucleus


class Cancelled(Exception):
    """The one cancellation: work stopped because its caller asked it to (a ``should_stop()`` callback said
    so, or a job was cancelled). Nothing final was written; what finished before (a stage's checkpoint) stays.
    mlcore raises it, and the web app's runner and workers let the same exception through."""


class TrainingDiverged(ValueError):
    """The loss stopped being a finite number: the weights are lost, and training on would write a model that
    classifies every nucleus alike. The message says where and what to change."""


class DataError(ValueError):
    """Malformed input data. The message names the file and what is wrong with it."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class DeviceUnavailable(ValueError):
    """A device the config names that this machine does not have (``cuda`` on a CPU-only worker): the message
    is the whole story."""


class NoClassNames(DataError):
    """Files that name no classes, read as labelled: ``reason`` says what is missing; the message adds how to
    read them as masks only (a caller with another way to say so, the web app's upload form, words its own)."""

    hint = "read with labelled=False for masks only"

    def __init__(self, path: str | Path | None, reason: str):
        self.reason = reason
        super().__init__(path, f"{reason} ({self.hint})")


@dataclass(frozen=True)
class LabelSet:
    """A taxonomy: an ordered list of class names, each with an RGB colour."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self):
        if not self.classes:
            raise ValueError(f"label set {self.name!r} has no classes")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"label set {self.name!r} repeats a class name: {list(self.classes)}")
        if not self.colors:
            object.__setattr__(self, "colors", default_colors(len(self.classes)))
        elif len(self.colors) != len(self.classes):
            raise ValueError(f"label set {self.name!r}: {len(self.colors)} colours for {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, class_name: str) -> int:
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise KeyError(f"unknown class {class_name!r} in label set {self.name!r} "
                           f"(known: {', '.join(self.classes)})") from None


# Why a reader left out a nucleus that its file lists (AnnotatedImage.left_out), and the words that report it. Where
# outlines overlap the later one wins each pixel, so an earlier one may keep none.
LEFT_OUT_REASONS = {
    "covered": "wholly covered by later ones",
    "outside": "wholly outside the image",
    "empty": "with an empty outline",
}


def left_out_text(counts: dict[str, int], noun: tuple[str, str] = ("nucleus", "nuclei")) -> str:
    """``"3 features left out: 2 wholly covered by later ones, 1 wholly outside the image"`` for the counts by
    reason (:data:`LEFT_OUT_REASONS`); ``noun``: what the files call one and several. Empty when none was."""
    total = sum(counts.values())
    if not total:
        return ""
    reasons = ", ".join(f"{counts[key]:,} {words}" for key, words in LEFT_OUT_REASONS.items() if counts.get(key))
    return f"{total:,} {noun[0] if total == 1 else noun[1]} left out: {reasons}"


@dataclass
class AnnotatedImage:
    """One image with its instance mask and the classes known for its instances.

    ``classes`` maps instance id -> class index into the dataset's label set; an instance of the
    mask that is absent from ``classes`` is unlabelled (missing label). ``left_out`` counts, by reason
    (:data:`LEFT_OUT_REASONS`), the nuclei of the image's annotation file that the reader left out because
    they kept no pixel of the image; readers of outlines fill it, a mask has nothing to leave out.
    """

    name: str                   # file stem, unique within its dataset
    image: np.ndarray           # H x W x 3 uint8, RGB
    instance_map: np.ndarray    # H x W int32, 0 = background, 1..N instance ids
    classes: dict[int, int] = field(default_factory=dict)
    group: str = ""             # split group: the source tile/slide (patches of a tile overlap)
    source_path: str = ""       # the image file it came from, for messages and provenance
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> nuclei of the file that kept no pixel

    def __post_init__(self):
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise DataError(self.source_path or self.name,
                            f"image must be H x W x 3 uint8 RGB, got shape {self.image.shape} {self.image.dtype}")
        if self.instance_map.shape != self.image.shape[:2]:
            raise DataError(self.source_path or self.name,
                            f"mask size {self.instance_map.shape[1]}x{self.instance_map.shape[0]} differs from "
                            f"image size {self.image.shape[1]}x{self.image.shape[0]}")
        if not self.group:
            self.group = self.name


@dataclass
class NucleusDataset:
    """A dataset as read from disk: its label set (None when unlabelled) and its images."""

    name: str
    format: str
    label_set: LabelSet | None
    images: list[AnnotatedImage]

    @property
    def labelled(self) -> bool:
        return self.label_set is not None


# Class colours for outlines over H&E tissue, in the order classes get them. About one man in twelve sees
# colours with less red or green (protan, deutan), a few people with less blue (tritan): the first seven
# were chosen, most distinct first, from Okabe & Ito's, Paul Tol's and Sasha Trubetskoy's palettes so that
# any two (and each and the unlabelled grey) stay apart under all three, and none is so dark that it
# vanishes on a haematoxylin-stained nucleus (tests/test_colour_palettes.py measures it); past seven,
# Trubetskoy's other colours, still distinct for full colour vision.
_PALETTE = (
    (204, 51, 17), (240, 228, 66), (68, 119, 170), (70, 240, 240), (245, 130, 48), (86, 180, 233),
    (0, 158, 115), (240, 50, 230), (145, 30, 180), (210, 245, 60), (0, 128, 128), (170, 110, 40),
)


def default_colors(n: int) -> tuple[tuple[int, int, int], ...]:
    """Class colours apart for colour-blind eyes too (the first seven), cycled past twelve classes."""
    return tuple(_PALETTE[i % len(_PALETTE)] for i in range(n))


# A label-set name or image stem is used as it is in a file name only when it is one file-name part: no
# separator, control character, leading dot or "..", at most 64 characters. Any other ("a/b", "..", a
# very long name) is replaced, so no name can make or escape a path.
_PLAIN_FILE_PART = re.compile(r"[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]{0,63}")


def file_part(text: str, fallback: str) -> str:
    """``text`` where it is a plain file-name part, else ``fallback``."""
    return text if _PLAIN_FILE_PART.fullmatch(text) and ".." not in text else fallback


MAX_NAME_LENGTH = 100  # of a class or label-set name (the web app stores them in columns of this size)


# Characters that reorder the text around them (bidirectional embeddings, overrides and isolates): in a name
# they make "a\u202eb" read as "ab" backwards, so one name can pass for another.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _invisible(c: str) -> bool:
    """Whitespace or a format character (zero-width space, joiners, marks): nothing a reader sees."""
    return c.isspace() or unicodedata.category(c) == "Cf"


def strip_invisible(text: str) -> str:
    """``text`` without whitespace or format characters at either end, so that "Lung\u200b" is "Lung"."""
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def name_key(name: str) -> str:
    """What two names share when they differ only in case, in any script ("Ω" and "ω", "Straße" and
    "STRASSE"), for refusing look-alike names. Databases' case-insensitive matching differs (SQLite folds
    ASCII letters only), so names are compared with this instead."""
    return unicodedata.normalize("NFC", name).casefold()


def quoted(name: str) -> str:
    """A name in a message, exactly as its owner wrote it: in single quotes, in double quotes when it holds a
    single one, in typographic quotes when it holds both. Unlike ``repr`` it never adds a backslash (names
    hold no control characters: :func:`name_problem`)."""
    if "'" not in name:
        return f"'{name}'"
    if '"' not in name:
        return f'"{name}"'
    return f"\u201c{name}\u201d"


def name_problem(text: str, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """What is wrong with a class, label-set, dataset or project name, or None. Any printable text is
    allowed ("/", "..", "<", non-ASCII, joiners inside an emoji or a word): names never become paths or URL
    segments, and pages escape them. Refused: nothing visible, control characters, and bidirectional
    controls, which make one name look like another."""
    if all(_invisible(c) for c in text):
        return "is empty" if not text.strip() else "has no visible character"
    if len(text) > max_length:
        return f"is {len(text)} characters long, over the limit of {max_length}"
    control = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)
    if control is not None:
        return f"contains the control character {control!r}"
    bidi = next((c for c in text if c in _BIDI_CONTROLS), None)
    if bidi is not None:
        return f"contains the text-direction control U+{ord(bidi):04X}"
    return None
