"""Importing a dataset: all of it or nothing.

Files are written under a fresh folder first; the rows are inserted in one transaction with bulk
inserts. Any failure removes the folder and rolls the transaction back, so a failed import leaves no
rows and no files behind.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

import cv2
import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from PIL import Image as PILImage

from mlcore.readers import FORMATS, open_dataset
from mlcore.types import DataError, LabelSet as MLLabelSet
from mlcore.writers import nucleus_geometry, nucleus_outlines
from webapp.core import audit
from webapp.projects.models import Project

from . import bulk
from .models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, LabelSource, Nucleus

Progress = Callable[[float, str], None]
THUMBNAIL_SIZE = 192
BATCH_NUCLEI = 20_000
PREPARE_THREADS = 2  # rows per bulk insert: large enough to be fast, small enough for memory


class ImportRejected(Exception):
    """The upload as a whole cannot be imported (a name taken, an empty archive...)."""


# ------------------------------------------------------------------------------------------ archives

def safe_extract(archive: Path, destination: Path, max_bytes: int) -> Path:
    """Unpack a zip archive under ``destination``, refusing anything that could escape it.

    Rejects absolute paths, ``..`` components, links, and archives whose unpacked size exceeds
    ``max_bytes`` (checked from the headers before anything is written, and again while writing).
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError(archive.name, "not a zip archive") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise DataError(archive.name, "the archive is empty")
        total = 0
        for member in members:
            name = member.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
                raise DataError(f"{archive.name}:{name}", "unsafe path in archive (absolute or '..'); nothing was imported")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(f"{archive.name}:{name}", "symbolic links are not allowed in archives")
            total += member.file_size
        if total > max_bytes:
            raise DataError(archive.name, f"unpacks to {total / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB")
        written = 0
        for member in members:
            target = destination.joinpath(*PurePosixPath(member.filename.replace("\\", "/")).parts)
            if not target.resolve().is_relative_to(destination.resolve()):
                raise DataError(f"{archive.name}:{member.filename}", "unsafe path in archive")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:  # headers can lie about sizes
                        raise DataError(archive.name, f"unpacks to more than the limit of {max_bytes / 1e6:.1f} MB")
                    sink.write(chunk)
    return dataset_root(destination)


def dataset_root(folder: Path) -> Path:
    """Zips often wrap everything in one top folder (and macOS adds __MACOSX): step into it."""
    entries = [p for p in folder.iterdir() if p.name not in {"__MACOSX", ".DS_Store"}]
    if len(entries) == 1 and entries[0].is_dir():
        return dataset_root(entries[0])
    return folder


# ------------------------------------------------------------------------------------------ label sets

def hex_color(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def resolve_label_set(project: Project, found: MLLabelSet, requested_name: str | None) -> tuple[LabelSet | None, MLLabelSet]:
    """Join an existing label set whose class names match, or describe the one to create."""
    names = list(found.classes)
    if requested_name:
        existing = LabelSet.objects.filter(project=project, name=requested_name).first()
        if existing is not None:
            if existing.class_names != names:
                raise ImportRejected(
                    f"label_set: {requested_name!r} has classes {existing.class_names}, but the files have {names}; "
                    "choose another label set name to create a new one")
            return existing, found
        return None, MLLabelSet(requested_name, found.classes, found.colors)
    for existing in LabelSet.objects.filter(project=project).prefetch_related("classes"):
        if existing.class_names == names:
            return existing, found
    name = found.name
    taken = set(LabelSet.objects.filter(project=project).values_list("name", flat=True))
    suffix = 2
    while name in taken:
        name, suffix = f"{found.name}-{suffix}", suffix + 1
    return None, MLLabelSet(name, found.classes, found.colors)


def create_label_set(project: Project, spec: MLLabelSet) -> LabelSet:
    label_set = LabelSet.objects.create(project=project, name=spec.name)
    LabelClass.objects.bulk_create([LabelClass(label_set=label_set, index=i, name=n, color=hex_color(c))
                                    for i, (n, c) in enumerate(zip(spec.classes, spec.colors))])
    return label_set


# ------------------------------------------------------------------------------------------ files

def pixel_checksum(rgb: np.ndarray) -> str:
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()


def save_image_files(folder: Path, stem: str, rgb: np.ndarray, instance_map: np.ndarray,
                     source_path: str) -> tuple[Path, Path, Path]:
    """Keep the original file when there is one (JPEG stays JPEG); masks as lossless 16-bit PNG."""
    source = Path(source_path) if source_path else None
    if source is not None and source.is_file() and source.suffix.lower() in {".png", ".jpg", ".jpeg"}:
        image_path = folder / "images" / f"{stem}{source.suffix.lower()}"
        shutil.copyfile(source, image_path)
    else:
        image_path = folder / "images" / f"{stem}.png"
        cv2.imwrite(str(image_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if instance_map.max(initial=0) < 65536:
        mask_path = folder / "masks" / f"{stem}.png"
        cv2.imwrite(str(mask_path), instance_map.astype(np.uint16))
    else:
        mask_path = folder / "masks" / f"{stem}.npy"
        np.save(mask_path, instance_map.astype(np.int32))
    thumb = PILImage.fromarray(rgb)
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    thumb_path = folder / "thumbs" / f"{stem}.jpg"
    thumb.save(thumb_path, quality=85)
    return image_path, mask_path, thumb_path


def load_mask(image: Image) -> np.ndarray:
    path = Path(settings.MEDIA_ROOT) / image.mask_file
    if path.suffix == ".npy":
        return np.load(path)
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int32)


def load_rgb(image: Image) -> np.ndarray:
    path = Path(settings.MEDIA_ROOT) / image.file
    return np.asarray(PILImage.open(path).convert("RGB"))


def media_relative(path: Path) -> str:
    return str(path.relative_to(settings.MEDIA_ROOT))


# ------------------------------------------------------------------------------------------ import

def do_import_dataset(project: Project, *, name: str, format: str, path: Path, actor=None,
                      label_set_name: str | None = None, labelled: bool = True, provenance: str = "",
                      progress: Progress | None = None) -> Dataset:
    """Read a dataset from ``path`` with the mlcore readers and store it whole, or raise and store nothing."""
    progress = progress or (lambda percent, message: None)
    if format not in FORMATS:
        raise ImportRejected(f"format: {format!r} is not one of {', '.join(FORMATS)}")
    if Dataset.objects.filter(project=project, name=name).exists():
        raise ImportRejected(f"name: project {project.name!r} already has a dataset named {name!r}")
    reader = open_dataset(format, path, name=name, label_set_name=label_set_name or name, labelled=labelled)
    if len(reader) == 0:
        raise DataError(path.name, "no images found in this dataset")

    folder = Path(settings.MEDIA_ROOT) / "projects" / str(project.pk) / "datasets" / uuid.uuid4().hex
    for sub in ("images", "masks", "thumbs"):
        (folder / sub).mkdir(parents=True)
    try:
        with transaction.atomic():
            dataset = _import_rows(project, reader, folder, name=name, format=format, actor=actor,
                                   label_set_name=label_set_name, provenance=provenance, progress=progress)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return dataset


def _import_rows(project, reader, folder: Path, *, name, format, actor, label_set_name, provenance, progress) -> Dataset:
    label_set = None
    if reader.label_set is not None:
        label_set, spec = resolve_label_set(project, reader.label_set, label_set_name)
        if label_set is None:
            label_set = create_label_set(project, spec)
    dataset = Dataset.objects.create(project=project, name=name, label_set=label_set, format=format,
                                     provenance=provenance, uploaded_by=actor,
                                     storage_dir=media_relative(folder))
    known_checksums = dict(Image.objects.filter(project=project).values_list("checksum", "name"))
    batch = _Batch(project, dataset, label_set, actor)
    total_images = len(reader)
    for number, (annotated, prepared) in enumerate(_prepared(reader, folder), start=1):
        checksum = prepared[0]
        if checksum in known_checksums:
            raise DataError(annotated.source_path or annotated.name,
                            f"this image was already uploaded to the project (as {known_checksums[checksum]!r})")
        known_checksums[checksum] = annotated.name
        batch.add_image(annotated, *prepared)
        if batch.nuclei >= BATCH_NUCLEI:
            batch.flush()
        progress(100.0 * number / total_images, f"image {number}/{total_images}: {annotated.name}")
    batch.flush()
    dataset.image_count = total_images
    dataset.nucleus_count = batch.total_nuclei
    dataset.save(update_fields=["image_count", "nucleus_count"])
    audit.record("dataset.imported", actor=actor, target=dataset, name=name, format=format,
                 images=total_images, nuclei=batch.total_nuclei, label_set=label_set.name if label_set else None)
    return dataset


def _prepare(annotated, folder: Path) -> tuple:
    """The per-image work that needs no database: checksum, files, geometry and outlines."""
    rgb, instance_map = annotated.image, annotated.instance_map
    checksum = pixel_checksum(rgb)
    paths = save_image_files(folder, annotated.name, rgb, instance_map, annotated.source_path)
    return (checksum, *paths, nucleus_geometry(instance_map), nucleus_outlines(instance_map))


def _prepared(reader, folder: Path, workers: int = PREPARE_THREADS):
    """Yield (image, prepared) in order while threads prepare the next few images.

    OpenCV, NumPy, Pillow and hashlib release the GIL, so threads use the cores while the main
    thread reads the next image and writes rows; the window keeps memory bounded.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
        window: deque = deque()
        for annotated in reader:
            window.append((annotated, pool.submit(_prepare, annotated, folder)))
            if len(window) > 2 * workers:
                first, future = window.popleft()
                yield first, future.result()
        while window:
            first, future = window.popleft()
            yield first, future.result()


class _Batch:
    """Images and nuclei waiting to be inserted together (with ids allocated at flush time)."""

    def __init__(self, project, dataset, label_set, actor):
        self.project, self.dataset, self.label_set = project, dataset, label_set
        self.author_id = actor.pk if getattr(actor, "is_authenticated", False) else None
        self.images: list[tuple] = []
        self.per_image: list[tuple] = []  # (geometry, outlines, classes)
        self.nuclei = 0
        self.total_nuclei = 0

    def add_image(self, annotated, checksum, image_path, mask_path, thumb_path, geometry, outlines):
        self.images.append((self.project.pk, self.dataset.pk, annotated.name, media_relative(image_path),
                            media_relative(mask_path), media_relative(thumb_path), annotated.image.shape[1],
                            annotated.image.shape[0], checksum, annotated.group, len(geometry)))
        self.per_image.append((geometry, outlines, annotated.classes if self.label_set else {}))
        self.nuclei += len(geometry)

    def flush(self):
        if not self.images:
            return
        image_ids = bulk.allocate_ids(Image, len(self.images))
        bulk.insert_rows(Image, IMAGE_COLUMNS, ([image_id, *row] for image_id, row in zip(image_ids, self.images)))
        nucleus_ids = iter(bulk.allocate_ids(Nucleus, self.nuclei))
        nucleus_rows, labelled = [], []
        for image_id, (geometry, outlines, classes) in zip(image_ids, self.per_image):
            for instance_id, x0, y0, x1, y1, cx, cy, area in geometry.tolist():
                nucleus_id = next(nucleus_ids)
                nucleus_rows.append((nucleus_id, image_id, instance_id, x0, y0, x1, y1, cx, cy, area,
                                     outlines.get(instance_id, [])))
                class_index = classes.get(instance_id)
                if class_index is not None:
                    labelled.append((nucleus_id, class_index))
        bulk.insert_rows(Nucleus, NUCLEUS_COLUMNS, nucleus_rows)
        if self.label_set is not None and labelled:
            now = timezone.now()
            label_ids = bulk.allocate_ids(Label, len(labelled))
            bulk.insert_rows(Label, LABEL_COLUMNS, (
                (label_id, nucleus_id, self.label_set.pk, class_index, LabelSource.GROUND_TRUTH, self.author_id, "", now)
                for label_id, (nucleus_id, class_index) in zip(label_ids, labelled)))
            current_ids = bulk.allocate_ids(CurrentLabel, len(labelled))
            bulk.insert_rows(CurrentLabel, CURRENT_COLUMNS, (
                (current_id, nucleus_id, self.label_set.pk, label_id, class_index, LabelSource.GROUND_TRUTH)
                for current_id, label_id, (nucleus_id, class_index) in zip(current_ids, label_ids, labelled)))
        self.total_nuclei += self.nuclei
        self.images, self.per_image, self.nuclei = [], [], 0


IMAGE_COLUMNS = ("id", "project_id", "dataset_id", "name", "file", "mask_file", "thumbnail_file", "width", "height",
                 "checksum", "group", "nucleus_count")
NUCLEUS_COLUMNS = ("id", "image_id", "instance_id", "x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area",
                   "outline")
LABEL_COLUMNS = ("id", "nucleus_id", "label_set_id", "class_index", "source", "author_id", "client_id", "created_at")
CURRENT_COLUMNS = ("id", "nucleus_id", "label_set_id", "label_id", "class_index", "source")
