"""Importing a dataset: all of it or nothing.

Files are written under a fresh folder of the media work root first (webapp.core.media) and published to
the storage before the transaction that refers to them commits; the rows are inserted in that one
transaction with bulk inserts. Any failure removes the folder (from the storage too) and rolls the
transaction back, so a failed import leaves no rows and no files behind.
"""

from __future__ import annotations

import pickle
import threading
import uuid
import zipfile
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import cv2
import numpy as np
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.utils import timezone
from PIL import Image as PILImage

from mlcore.readers import FORMATS, nucleus_noun, open_dataset
from mlcore.types import (MAX_NAME_LENGTH, DataError, LabelSet as MLLabelSet, left_out_text, name_key, quoted,
                          strip_invisible)
from webapp.core import audit, media
from webapp.core.domain_errors import Invalid
from webapp.projects.models import Project

from . import bulk
from .models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, LabelSource, Nucleus
from .preparing import NUCLEUS_FIELDS, PreparedImage, prepared_images

Progress = Callable[[float, str], None]
BATCH_NUCLEI = 5_000  # nuclei per bulk insert: small enough that writing overlaps the preparing workers


class ImportRejected(Invalid):
    """The upload as a whole cannot be imported (a name taken, an empty archive...), on the user's ``field``."""

    default_code = "import_rejected"


# ------------------------------------------------------------------------------------------ archives

# What macOS and Windows add to folders and zips: never part of a dataset (a "masks/._a.npy" beside "masks/a.npy"
# was "a mask without an image").
OS_METADATA = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
# A file's name, at most: its stored path (projects/<id>/datasets/<folder>/images/<name>) must fit the database's
# 255 characters, and a name the file system's 255 bytes.
MAX_FILE_NAME = 180
# Extensions matched in lower case by the readers (a "types/a.NPY" was "types/a.npy: file not found"); an image's is
# left as it is, since a COCO file names its images as they are.
LOWER_SUFFIXES = {".mat", ".npy", ".geojson", ".json"}


def dataset_file_parts(name: str, shown: str) -> tuple[str, ...] | None:
    """Where a file of an upload goes in the dataset's folder, as path parts: None for the operating system's
    own files, which are left out. Refuses names too long to store (DataError naming ``shown``)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or any(part in OS_METADATA for part in parts) or parts[-1].startswith("._"):
        return None
    for part in parts:
        if len(part) > MAX_FILE_NAME or len(part.encode()) > 255:
            raise DataError(shown, f"a file or folder name of {len(part)} characters ({len(part.encode())} bytes "
                                   f"in UTF-8); at most {MAX_FILE_NAME} characters and 255 bytes: shorten it")
    suffix = PurePosixPath(parts[-1]).suffix
    if suffix.lower() in LOWER_SUFFIXES and suffix != suffix.lower():
        parts = (*parts[:-1], parts[-1][:-len(suffix)] + suffix.lower())
    return parts


def safe_extract(archive: Path, destination: Path, max_bytes: int, display_name: str | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 before_writing: Callable[[int], None] | None = None) -> Path:
    """Unpack a zip archive under ``destination``, refusing anything that could escape it.

    Rejects absolute paths, ``..`` components, links, and archives whose unpacked size exceeds
    ``max_bytes`` (checked from the headers before anything is written, and again while writing).
    Errors name the archive ``display_name`` (the name the user's file had), else its own file name.
    ``progress(written, total)``: bytes unpacked so far of the headers' total, after each file.
    ``before_writing(total)``: called with the headers' total once they are checked, before anything is written
    (a check of the free disk space).
    """
    name = display_name or archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError(name, "not a zip archive") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise DataError(name, "the archive is empty")
        total = 0
        for member in members:
            member_name = member.filename
            parts = PurePosixPath(member_name.replace("\\", "/")).parts
            if member_name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
                raise DataError(f"{name}:{member_name}", "unsafe path in archive (absolute or '..'); nothing was imported")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(f"{name}:{member_name}", "symbolic links are not allowed in archives")
            total += member.file_size
        if total > max_bytes:
            raise DataError(name, f"unpacks to {total / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB")
        if before_writing is not None:
            before_writing(total)
        written = 0
        for member in members:
            parts = dataset_file_parts(member.filename, f"{name}:{member.filename}")
            if parts is None:
                continue
            target = destination.joinpath(*parts)
            if not target.resolve().is_relative_to(destination.resolve()):
                raise DataError(f"{name}:{member.filename}", "unsafe path in archive")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:  # headers can lie about sizes
                        raise DataError(name, f"unpacks to more than the limit of {max_bytes / 1e6:.1f} MB")
                    sink.write(chunk)
            if progress is not None:
                progress(written, total)
    return dataset_root(destination)


def dataset_root(folder: Path) -> Path:
    """Zips often wrap everything in one top folder (and macOS adds __MACOSX): step into it."""
    entries = [p for p in folder.iterdir() if p.name not in OS_METADATA]
    if len(entries) == 1 and entries[0].is_dir():
        return dataset_root(entries[0])
    return folder


# ------------------------------------------------------------------------------------------ label sets

def hex_color(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def resolve_label_set(project: Project, found: MLLabelSet, requested_name: str | None) -> tuple[LabelSet | None, MLLabelSet]:
    """Join an existing label set with the same class names, in any order (:func:`class_order` maps the files'
    indices to its own), or describe the one to create. A GeoJSON names its classes in the order they first
    appear, another format in its own: the same taxonomy must not become two label sets for that.

    A label set named in the upload is joined when the files' classes are some of its classes: a GeoJSON
    lists only the classes its features use, so an export of images without any "dead" nucleus (or a QuPath
    project's subset) must still go back into the taxonomy it came from. Unnamed, only the same names join:
    a subset of one taxonomy's names may be another taxonomy."""
    names = list(found.classes)
    if requested_name:
        existing = LabelSet.objects.filter(project=project, name=requested_name).first()
        if existing is not None:
            extra = [n for n in names if n not in existing.class_names]
            if extra:
                raise ImportRejected(
                    f"{requested_name!r} has classes {existing.class_names}, but the files also have {extra}; "
                    "choose another label set name to create a new one", field="label_set")
            return existing, found
        return None, MLLabelSet(requested_name, found.classes, found.colors)
    for existing in LabelSet.objects.filter(project=project).prefetch_related("classes"):
        if sorted(existing.class_names) == sorted(names):
            return existing, found
    # A dataset name (up to 200) names a new label set by default, cut to fit without a space at the cut.
    base = name = strip_invisible(found.name[:MAX_NAME_LENGTH])
    taken = set(LabelSet.objects.filter(project=project).values_list("name", flat=True))
    suffix = 2
    while name in taken:
        tail = f"-{suffix}"
        name, suffix = f"{strip_invisible(base[:MAX_NAME_LENGTH - len(tail)])}{tail}", suffix + 1
    return None, MLLabelSet(name, found.classes, found.colors)


def class_order(label_set: LabelSet | None, found: MLLabelSet | None) -> list[int] | None:
    """For each class index of the files (``found``'s order), the index of the same class name in the label set
    they join; None where the orders agree (or nothing is labelled)."""
    if label_set is None or found is None:
        return None
    own = {name: index for index, name in enumerate(label_set.class_names)}
    order = [own[name] for name in found.classes]
    return None if order == list(range(len(order))) else order


def refuse_taken_dataset_name(project: Project, name: str, exclude: Dataset | None = None) -> None:
    """Dataset names are unique in a project, in any case ("PanNuke" and "pannuke" would read as one on its
    page): checked where an upload is accepted, again by the import, and at a rename (``exclude``: the
    dataset renamed, which may change its own name's case)."""
    others = Dataset.objects.filter(project=project)
    if exclude is not None:
        others = others.exclude(pk=exclude.pk)
    taken = next((other for other in others.values_list("name", flat=True).order_by("pk")
                  if name_key(other) == name_key(name)), None)
    if taken is not None:
        raise ImportRejected(f"project {quoted(project.name)} already has a dataset named {taken!r}", field="name")


def create_label_set(project: Project, spec: MLLabelSet) -> LabelSet:
    label_set = LabelSet.objects.create(project=project, name=spec.name)
    LabelClass.objects.bulk_create([LabelClass(label_set=label_set, index=i, name=n, color=hex_color(c))
                                    for i, (n, c) in enumerate(zip(spec.classes, spec.colors))])
    return label_set


# ------------------------------------------------------------------------------------------ files

def load_mask(image: Image) -> np.ndarray:
    path = media.local_path(image.mask_file)
    if path.suffix == ".npy":
        return np.load(path)
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:  # missing or unreadable: cv2 says so with None, which failed later as "NoneType has no astype"
        raise FileNotFoundError(f"the instance mask of image {image.pk} ({image.mask_file}) cannot be read")
    return mask.astype(np.int32)


def load_rgb(image: Image) -> np.ndarray:
    path = media.local_path(image.file)
    return np.asarray(PILImage.open(path).convert("RGB"))


def media_relative(path: Path) -> str:
    """The storage name (what a row keeps) of a file or folder under the media work root."""
    return media.name_of(path)


# ------------------------------------------------------------------------------------------ import

def do_import_dataset(project: Project, *, name: str, format: str, path: Path, actor=None,
                      label_set_name: str | None = None, labelled: bool = True, provenance: str = "",
                      progress: Progress | None = None, folder: Path | None = None,
                      log: Callable[[str], None] | None = None, left_out: dict[str, int] | None = None) -> Dataset:
    """Read a dataset from ``path`` with the mlcore readers and store it whole, or raise and store nothing.

    ``folder``: where its files go (an import job's own, see webapp.jobs.sweep.import_folder); a fresh one
    under the project by default. It must not exist yet. ``progress(percent, message)`` is called per
    image; ``log(line)`` with the few steps worth keeping in a job's log (the images found, the first and
    last image and every quarter, the nuclei of the files left out and the images they were in, the rows
    stored). ``left_out``, when given, receives the counts of the nuclei of the files that the reader left
    out, by reason (:data:`mlcore.types.LEFT_OUT_REASONS`: wholly covered by later ones, wholly outside
    their image...), summed over the images."""
    progress = progress or (lambda percent, message: None)
    log = log or (lambda line: None)
    if format not in FORMATS:
        raise ImportRejected(f"{format!r} is not one of {', '.join(FORMATS)}", field="format")
    refuse_taken_dataset_name(project, name)
    reader = open_dataset(format, path, name=name, label_set_name=label_set_name or name, labelled=labelled)
    if len(reader) == 0:
        raise DataError(path.name, "no images found in this dataset")
    log(f"reading {len(reader)} image{'s' if len(reader) != 1 else ''} ({format})")

    folder = folder or media.work_path(f"projects/{project.pk}/datasets/{uuid.uuid4().hex}")
    stored = media_relative(folder)
    for sub in ("images", "masks", "thumbs"):
        (folder / sub).mkdir(parents=True)
    try:
        # SQLite lets one transaction write at a time in the whole database: the images are prepared first,
        # outside the import's transaction, so that it holds the write lock only while its rows are stored
        # (held while a large upload was read, every other save of the application failed after 30 s).
        ready = None if bulk.uses_copy() else _prepared_first(reader, folder, progress)
        with transaction.atomic():
            dataset = _import_rows(project, reader, folder, name=name, format=format, actor=actor,
                                   label_set_name=label_set_name, provenance=provenance, progress=progress,
                                   log=log, ready=ready, left_out=left_out)
            # In the storage before the rows that name the files are committed: no reader on any host
            # ever finds a row whose file is missing.
            uploaded = media.publish(stored)
            if uploaded:
                log(f"uploaded {len(uploaded)} files to the storage")
            bulk.analyze_after_commit(Image, Nucleus, Label, CurrentLabel)
    except BaseException:
        media.delete(stored)  # here and, remote, what was uploaded of it
        raise
    return dataset


PREPARING_SHARE = 90.0  # of the progress bar, where the images are prepared before the rows are stored


def _prepared_first(reader, folder: Path, progress: Progress) -> Iterator[PreparedImage]:
    """Prepare every image now (their files written into ``folder``), keeping their rows in a file of the
    import's own folder rather than in memory; the generator returned gives them back in order and removes
    that file when it ends or is closed (before the folder is published). A DataError is raised here, as the
    rows' import would raise it."""
    spool = folder / "prepared-rows.pickle"   # written and read by this process only, in its own folder
    total = len(reader)
    with open(spool, "wb") as out, closing(prepared_images(reader, folder, as_text=False)) as images:
        for number, prepared in enumerate(images, start=1):
            pickle.dump(prepared, out, protocol=pickle.HIGHEST_PROTOCOL)
            progress(PREPARING_SHARE * number / total, f"image {number}/{total}: {prepared.name}")

    def read_back() -> Iterator[PreparedImage]:
        try:
            with open(spool, "rb") as rows:
                for _ in range(total):
                    yield pickle.load(rows)
        finally:
            spool.unlink(missing_ok=True)
    return read_back()


def _import_rows(project, reader, folder: Path, *, name, format, actor, label_set_name, provenance, progress,
                 log, ready: Iterator[PreparedImage] | None = None, left_out: dict[str, int] | None = None) -> Dataset:
    """The rows of the dataset, in the caller's transaction; the images as ``ready`` gives them (prepared
    already) or else prepared meanwhile by worker processes. ``left_out``: see :func:`do_import_dataset`."""
    label_set = None
    if reader.label_set is not None:
        label_set, spec = resolve_label_set(project, reader.label_set, label_set_name)
        if label_set is None:
            label_set = create_label_set(project, spec)
    try:
        with transaction.atomic():   # a savepoint: the name's unique constraint speaks as the checks do
            dataset = Dataset.objects.create(project=project, name=name, label_set=label_set, format=format,
                                             provenance=provenance, uploaded_by=actor,
                                             storage_dir=media_relative(folder))
    except IntegrityError:
        # Another import of the same name committed since this one checked (two jobs of one name queued by
        # another way than an upload): the check's words, not the database's.
        refuse_taken_dataset_name(project, name)
        raise
    copy = bulk.uses_copy()
    trusted = False
    if copy:
        # Foreign keys are checked as each batch is written, while the workers prepare the next images,
        # instead of all at once at the commit; this checks the dataset row's now, which locks the project,
        # label set and uploader that every bulk row below refers to (or the rows it refers to are its own),
        # so that where the role may, the per-row checks of the bulk rows are left out.
        bulk.check_constraints_now()
        trusted = bulk.trust_own_references()
    # Where each image of the project is, as its people name it: "'tile_0000' in dataset 'colon'".
    known_checksums = {checksum: f"{quoted(image)} in dataset {quoted(dataset)}" for checksum, image, dataset in
                       Image.objects.filter(project=project).values_list("checksum", "name", "dataset__name")}
    names: set[str] = set()
    # PostgreSQL: batches are written in a background thread, while this one takes the next prepared images.
    writer = _Writer() if copy else None
    batch = _Batch(project, dataset, label_set, actor, copy, writer, class_order(label_set, reader.label_set))
    total_images = len(reader)
    prepared_first = ready is not None
    left_out = {} if left_out is None else left_out
    left_out_images: list[tuple[int, str]] = []   # (nuclei left out, image name) of the images that left any out
    try:
        with closing(ready if prepared_first else prepared_images(reader, folder, as_text=copy)) as images:
            for number, prepared in enumerate(images, start=1):
                if prepared.name in names:
                    raise DataError(prepared.source_path or prepared.name,
                                    f"a second image is named {prepared.name!r} in this dataset")
                names.add(prepared.name)
                if prepared.checksum in known_checksums:
                    raise DataError(prepared.source_path or prepared.name,
                                    f"this image was already uploaded to the project "
                                    f"(as {known_checksums[prepared.checksum]})")
                known_checksums[prepared.checksum] = f"{quoted(prepared.name)} in this upload"
                batch.add_image(prepared)
                if prepared.left_out:
                    for reason, count in prepared.left_out.items():
                        left_out[reason] = left_out.get(reason, 0) + count
                    left_out_images.append((sum(prepared.left_out.values()), prepared.name))
                if batch.nuclei >= BATCH_NUCLEI:
                    batch.flush()
                message = f"image {number}/{total_images}: {prepared.name}"
                if prepared_first:
                    progress(PREPARING_SHARE + (100.0 - PREPARING_SHARE) * number / total_images, f"storing {message}")
                else:
                    progress(100.0 * number / total_images, message)
                if number in (1, total_images) or 4 * number // total_images != 4 * (number - 1) // total_images:
                    log(message)
            batch.flush()
    except BaseException:
        if writer is not None:
            writer.wait(raise_error=False)  # the transaction is rolled back only once nothing writes in it
        raise
    if writer is not None:
        writer.wait()
    if trusted:
        bulk.check_own_references()
    dataset.image_count = total_images
    dataset.nucleus_count = batch.total_nuclei
    dataset.save(update_fields=["image_count", "nucleus_count"])
    if left_out_images:
        log(left_out_line(left_out, left_out_images, format))
    log(f"stored {total_images} image{'s' if total_images != 1 else ''} and {batch.total_nuclei} nuclei"
        + (f" (label set {label_set.name})" if label_set else " (no labels)"))
    audit.record("dataset.imported", actor=actor, target=dataset, name=name, format=format,
                 images=total_images, nuclei=batch.total_nuclei, label_set=label_set.name if label_set else None)
    return dataset


def left_out_line(left_out: dict[str, int], images: list[tuple[int, str]], format: str, named: int = 5) -> str:
    """The job's log line on the nuclei of the files left out: how many, why, and in which images (those with
    the most first, ``named`` at most)."""
    ranked = sorted(images, key=lambda item: (-item[0], item[1]))
    shown = ", ".join(f"{quoted(image)} {count:,}" for count, image in ranked[:named])
    more = f" and {len(ranked) - named:,} more" if len(ranked) > named else ""
    return (f"{left_out_text(left_out, nucleus_noun(format))} "
            f"(in {len(ranked):,} image{'s' if len(ranked) != 1 else ''}: {shown}{more})")


class _Writer:
    """Writes the batches of an import one at a time in a background thread, on the importing thread's
    database connection, so inside its transaction. While PostgreSQL inserts and checks one batch (most of
    the time of a write is the server's), the importing thread keeps taking prepared images from the
    workers, which would otherwise wait with their results. Until :meth:`wait` returns, nothing else
    uses that connection (the job's progress goes on its own, see webapp.jobs.operations)."""

    def __init__(self):
        self._connection = connections[DEFAULT_DB_ALIAS]
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, function, *args) -> None:
        """Run ``function(*args)`` in the background, once the previous batch is written."""
        self.wait()
        self._connection.inc_thread_sharing()
        self._thread = threading.Thread(target=self._run, args=(function, args), name="import-writer", daemon=True)
        self._thread.start()

    def _run(self, function, args) -> None:
        connections[DEFAULT_DB_ALIAS] = self._connection  # this thread's "default" is the importing one
        try:
            function(*args)
        except BaseException as exc:  # noqa: BLE001 - raised in the importing thread by wait()
            self._error = exc

    def wait(self, raise_error: bool = True) -> None:
        """Wait for the batch being written; raise what writing it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._connection.dec_thread_sharing()
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


class _Batch:
    """Images and nuclei waiting to be inserted together (with ids allocated at flush time).

    On PostgreSQL the nuclei arrive as COPY text lines from the workers, and labels are written as COPY
    text too: no per-row Python objects beyond one formatted line.
    """

    def __init__(self, project, dataset, label_set, actor, copy: bool, writer: _Writer | None = None,
                 class_map: list[int] | None = None):
        self.project, self.dataset, self.label_set, self.copy = project, dataset, label_set, copy
        self.class_map = class_map  # the files' class index -> the label set's (class_order)
        self.author_id = actor.pk if getattr(actor, "is_authenticated", False) else None
        self.writer = writer
        self.images: list[PreparedImage] = []
        self.nuclei = 0
        self.total_nuclei = 0

    def add_image(self, prepared: PreparedImage):
        self.images.append(prepared)
        self.nuclei += len(prepared.nuclei)

    def flush(self):
        """Write the images waiting (in the writer's thread when there is one) and start a new batch."""
        if not self.images:
            return
        images, nuclei = self.images, self.nuclei
        self.images, self.nuclei = [], 0
        self.total_nuclei += nuclei
        if self.writer is None:
            self._write(images, nuclei)
        else:
            self.writer.submit(self._write, images, nuclei)

    def _write(self, images: list[PreparedImage], nuclei: int):
        image_ids = bulk.allocate_ids(Image, len(images))
        bulk.insert_rows(Image, IMAGE_COLUMNS, (
            (image_id, self.project.pk, self.dataset.pk, p.name, p.image_file, p.mask_file, p.thumbnail_file,
             p.width, p.height, p.checksum, p.group, len(p.nuclei)) for image_id, p in zip(image_ids, images)))
        nucleus_ids = bulk.allocate_ids(Nucleus, nuclei)
        # (nucleus id, class index) of every labelled nucleus, in insertion order
        labelled: list[tuple[int, int]] = []
        position = 0
        if self.copy:
            lines = []
            for image_id, p in zip(image_ids, images):
                ids = nucleus_ids[position:position + len(p.nuclei)]
                lines += [f"{nucleus_id}\t{image_id}\t{line}\n" for nucleus_id, line in zip(ids, p.nuclei)]
                labelled += [(nucleus_id, c) for nucleus_id, c in zip(ids, p.classes) if c >= 0]
                position += len(p.nuclei)
            bulk.copy_text(Nucleus, NUCLEUS_COLUMNS, lines)
        else:
            rows = []
            for image_id, p in zip(image_ids, images):
                ids = nucleus_ids[position:position + len(p.nuclei)]
                rows += [(nucleus_id, image_id, *fields) for nucleus_id, fields in zip(ids, p.nuclei)]
                labelled += [(nucleus_id, c) for nucleus_id, c in zip(ids, p.classes) if c >= 0]
                position += len(p.nuclei)
            bulk.insert_rows(Nucleus, NUCLEUS_COLUMNS, rows, json_encoded=True)
        if self.class_map is not None:
            labelled = [(nucleus_id, self.class_map[c]) for nucleus_id, c in labelled]
        if self.label_set is not None and labelled:
            self._insert_labels(labelled)

    def _insert_labels(self, labelled: list[tuple[int, int]]):
        label_set_id, source = self.label_set.pk, LabelSource.GROUND_TRUTH
        label_ids = bulk.allocate_ids(Label, len(labelled))
        now = timezone.now()
        if self.copy:
            author = "\\N" if self.author_id is None else str(self.author_id)
            tail = f"\t{source}\t{author}\t\t{now.isoformat()}\n"
            bulk.copy_text(Label, LABEL_COLUMNS, [f"{label_id}\t{nucleus_id}\t{label_set_id}\t{class_index}{tail}"
                                                  for label_id, (nucleus_id, class_index) in zip(label_ids, labelled)])
            bulk.copy_text(CurrentLabel, CURRENT_COLUMNS, [
                f"{nucleus_id}\t{label_set_id}\t{label_id}\t{class_index}\t{source}\n"
                for label_id, (nucleus_id, class_index) in zip(label_ids, labelled)])
            return
        bulk.insert_rows(Label, LABEL_COLUMNS, (
            (label_id, nucleus_id, label_set_id, class_index, source, self.author_id, "", now)
            for label_id, (nucleus_id, class_index) in zip(label_ids, labelled)))
        bulk.insert_rows(CurrentLabel, CURRENT_COLUMNS, (
            (nucleus_id, label_set_id, label_id, class_index, source)
            for label_id, (nucleus_id, class_index) in zip(label_ids, labelled)))


IMAGE_COLUMNS = ("id", "project_id", "dataset_id", "name", "file", "mask_file", "thumbnail_file", "width", "height",
                 "checksum", "group", "nucleus_count")
NUCLEUS_COLUMNS = ("id", "image_id", *NUCLEUS_FIELDS)
LABEL_COLUMNS = ("id", "nucleus_id", "label_set_id", "class_index", "source", "author_id", "client_id", "created_at")
CURRENT_COLUMNS = ("nucleus_id", "label_set_id", "label_id", "class_index", "source")  # id: the column default
