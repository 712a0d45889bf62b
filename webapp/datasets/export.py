"""Exports: the merged project table (CSV), and per image or dataset the formats other tools read.

Plain functions over the models (no request objects), used by the thin API views in
:mod:`webapp.datasets.viewer_api`:

- :func:`merged_csv_rows`: one row per nucleus of a project with, for every label set, the ground-truth,
  reviewed and predicted class. A generator that reads the nuclei in id-ordered chunks, so a project
  with a million nuclei streams in constant memory.
- :func:`image_geojson`: a QuPath GeoJSON FeatureCollection (classification name and colour).
- :func:`image_types_npy`: the original method's N x 2 types table (instance id, class index).
- :func:`dataset_coco_zip`: a zip with ``annotations.json`` and ``images/`` (COCO instances), streamed.
- :func:`detections_geojson_text`: every nucleus of a dataset or a project as QuPath detections, streamed,
  with the active model version's probability and branch disagreement as measurements.

Class sources are those of :mod:`webapp.datasets.queries` (``current`` by default).
"""

from __future__ import annotations

import csv
import logging
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from django.db.models import Q

from mlcore.writers import (coco_json_text, exact_geometries, feature_collection_text, geojson_features,
                            outline_feature)
from webapp.core import media

from .importing import load_mask
from .models import CurrentLabel, Dataset, Image, Label, LabelSource, Nucleus
from .prediction_source import active_version
from .queries import LabelSetInfo, class_indices, label_sets_of, prediction_details, to_ml_label_set

logger = logging.getLogger(__name__)
CSV_CHUNK = 5000  # nuclei per database round trip while streaming the merged table


# ----------------------------------------------------------------------------------------- merged CSV

def merged_csv_header(label_sets: list[LabelSetInfo]) -> list[str]:
    header = ["project", "dataset", "image", "instance_id", "centroid_x", "centroid_y", "area"]
    for info in label_sets:
        header += [f"{info.name}:ground_truth", f"{info.name}:reviewed", f"{info.name}:reviewer",
                   f"{info.name}:predicted", f"{info.name}:probability", f"{info.name}:disagreement"]
    return header


def merged_rows(project, chunk: int = CSV_CHUNK, image: Image | None = None) -> Iterator[list]:
    """The merged table as lists of values, header first (see :func:`merged_csv_rows`); ``image``: only
    its nuclei (a slide's table)."""
    label_sets = label_sets_of(project)
    yield merged_csv_header(label_sets)
    ls_ids = [info.id for info in label_sets]
    version = active_version(project)
    names = [{c["index"]: c["name"] for c in info.classes} for info in label_sets]
    datasets = dict(Dataset.objects.filter(project=project).values_list("id", "name"))
    images = {pk: (datasets[ds], name)
              for pk, ds, name in Image.objects.filter(project=project).values_list("id", "dataset_id", "name")}
    last = 0
    while True:
        # Keyset pagination on the primary key: each chunk is an index range scan, never an OFFSET.
        scope = Q(image=image) if image is not None else Q(image__project=project)
        nuclei = list(Nucleus.objects.filter(scope, id__gt=last).order_by("id")
                      .values_list("id", "image_id", "instance_id", "centroid_x", "centroid_y", "area")[:chunk])
        if not nuclei:
            return
        first, last = nuclei[0][0], nuclei[-1][0]
        span = Q(nucleus_id__gte=first, nucleus_id__lte=last, label_set_id__in=ls_ids)
        reviewed = {(n, ls): (c, who) for n, ls, c, who in CurrentLabel.objects.filter(span, source=LabelSource.REVIEW)
                    .values_list("nucleus_id", "label_set_id", "class_index", "label__author__username").order_by()}
        truth = {}
        for n, ls, c in (Label.objects.filter(span, source=LabelSource.GROUND_TRUTH)
                         .values_list("nucleus_id", "label_set_id", "class_index").order_by("id")):
            truth[n, ls] = c  # ascending ids: the latest ground truth wins
        predicted = (prediction_details(project, Q(nucleus_id__gte=first, nucleus_id__lte=last), ls_ids,
                                        version) if version else {})
        for pk, image_id, instance_id, cx, cy, area in nuclei:
            dataset_name, image_name = images[image_id]
            row = [project.name, dataset_name, image_name, instance_id, f"{cx:.2f}", f"{cy:.2f}", area]
            for ls, classes in zip(ls_ids, names):
                gt, (rv, reviewer) = truth.get((pk, ls)), reviewed.get((pk, ls), (None, None))
                pred = predicted.get((pk, ls))
                row += [classes.get(gt, gt) if gt is not None else "",
                        classes.get(rv, rv) if rv is not None else "",
                        reviewer or "",
                        classes.get(pred[0], pred[0]) if pred else "",
                        f"{pred[1]:.4f}" if pred and pred[1] is not None else "",
                        f"{pred[2]:.4f}" if pred and pred[2] is not None else ""]
            yield row


# A cell that starts with one of these is a formula to Excel, LibreOffice and Google Sheets: an uploaded class or
# image name "=HYPERLINK(...)" would run when a curator opens the table (OWASP, "CSV injection"). Such a cell
# gets a leading apostrophe, which spreadsheets read as "text" and do not show. Every text cell of the table comes
# from names (numbers are written non-negative), so no value of our own is touched.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value):
    """``value`` as a spreadsheet shows it, never run: text starting like a formula gets a leading apostrophe."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


class _Echo:
    """A file-like object whose write returns the line: csv.writer then yields strings one by one."""

    def write(self, value: str) -> str:
        return value


def merged_csv_rows(project, chunk: int = CSV_CHUNK, image: Image | None = None, bom: bool = False) -> Iterator[str]:
    """CSV lines of the merged table (header first), one per nucleus.

    Columns: project, dataset, image, instance_id, centroid_x, centroid_y (the mean of its pixels' indices:
    + 0.5 in the polygons' pixel-edge coordinates), area, then for every label
    set ``<name>:ground_truth``, ``<name>:reviewed`` (the current review), ``<name>:reviewer`` (who made
    it), ``<name>:predicted``,
    ``<name>:probability`` and ``<name>:disagreement`` (between the two branches; all three from the
    active model version, empty until there is one). Class names, not indices; empty = none. Names that a
    spreadsheet would take for a formula are written as text (:func:`spreadsheet_text`). ``bom``: a UTF-8 byte
    order mark first, which tells Excel the encoding.
    """
    if bom:
        yield "\ufeff"
    writer = csv.writer(_Echo())
    for row in merged_rows(project, chunk, image):
        yield writer.writerow([spreadsheet_text(value) for value in row])


# ----------------------------------------------------------------------------------------- per image

def _info_for(project, label_set) -> LabelSetInfo | None:
    if label_set is None:
        return None
    return next(info for info in label_sets_of(project) if info.id == label_set.pk)


def image_geojson(project, image: Image, label_set, source: str = "current",
                  object_type: str = "annotation") -> dict:
    """The nuclei of an image as a QuPath GeoJSON FeatureCollection, classified in ``label_set``.

    Outlines come from the stored instance mask (exact contours, pixel-edge coordinates as QuPath
    writes them); a nucleus without a class in ``label_set`` (from ``source``) has no classification.
    ``label_set`` None: every nucleus unclassified.
    """
    if image.is_slide:
        # A slide has no instance mask: its stored outlines (those QuPath gave) are the shapes.
        if label_set is None:
            label_set = project.label_sets.order_by("id").first()
        if label_set is not None:
            return {"type": "FeatureCollection",
                    "features": list(detection_features(project, label_set, source, object_type=object_type,
                                                        image=image))}
    info = _info_for(project, label_set)
    classes = class_indices(image.pk, label_set.pk, source) if label_set is not None else {}
    features = geojson_features(load_mask(image), classes, to_ml_label_set(info) if info else None, object_type)
    return {"type": "FeatureCollection", "features": features}


def image_types_npy(image: Image, label_set, source: str = "current") -> bytes:
    """The seed format's types file: N x 2 int32 rows (instance id, class index), sorted by id.

    Nuclei without a class in the label set are left out (absent = unlabelled, as the format says).
    """
    classes = class_indices(image.pk, label_set.pk, source)
    rows = sorted((int(i), int(c)) for i, c in classes.items())
    buffer = io.BytesIO()
    np.save(buffer, np.array(rows, dtype=np.int32).reshape(-1, 2))
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------- per dataset

def coco_file_name(image: Image) -> str:
    return image.name + Path(image.file).suffix.lower()


class _Sink(io.RawIOBase):
    """An unseekable file that keeps what is written until it is taken: zipfile writes a zip to it (with data
    descriptors, as to a pipe) and the response sends each piece as it is made."""

    def __init__(self):
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def dataset_coco_zip(dataset: Dataset, label_set, source: str = "current",
                     segmentation: str = "polygon") -> Iterator[bytes]:
    """A COCO zip of a dataset, as pieces of bytes to stream.

    ``annotations.json`` (instances, category id = class index + 1, 0 = unlabelled) and every image under
    ``images/`` as stored (a JPEG stays the same JPEG). ``segmentation``: ``polygon``, ``rle`` or
    ``compressed_rle`` (RLE is exact). One image's mask and annotations are held at a time: the first bytes go
    out at once and memory stays flat whatever the dataset's size (the whole annotations, built first, took
    24 s and 840 MB of a web worker for 5,000 tiles).
    """
    info = _info_for(dataset.project, label_set)
    # A whole slide has no tile and no mask to put in a COCO archive (gigabytes of pixels): its nuclei
    # are exported as QuPath detections instead (/api/projects/{p}/slides/{image}/export/...).
    images = list(Image.objects.filter(dataset=dataset, slide_file="").order_by("name", "id"))

    def triples():
        for image in images:
            classes = class_indices(image.pk, label_set.pk, source) if label_set is not None else {}
            yield coco_file_name(image), load_mask(image), classes

    about = {"description": f"{dataset.project.name} / {dataset.name}",
             "label_set": label_set.name if label_set else None, "source": source}
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        # Its size is unknown until it is written: zip64 from the start, as a dataset's may pass 4 GB.
        with archive.open("annotations.json", "w", force_zip64=True) as entry:
            for text in coco_json_text(triples(), to_ml_label_set(info) if info else None, segmentation, about):
                entry.write(text.encode())
                if written := sink.take():   # the compressor hands on its output in blocks
                    yield written
        for image in images:
            # Images are already compressed: store them as they are.
            archive.write(media.local_path(image.file), f"images/{coco_file_name(image)}",
                          compress_type=zipfile.ZIP_STORED)
            yield sink.take()
    yield sink.take()


# ----------------------------------------------------------------------------------------- detections

GEOJSON_CHUNK = 2000  # nuclei per database round trip while streaming detections

MEASUREMENT_PROBABILITY = "Prediction probability"
MEASUREMENT_DISAGREEMENT = "Branch disagreement"
MEASUREMENT_AREA = "Area px^2"


def _chunk_classes(span: Q, label_set_id: int, source: str, predicted: dict) -> dict[int, int]:
    """``{nucleus_id: class index}`` in one label set from ``source``, for the nuclei of ``span``."""
    if source == "prediction":
        return {n: values[0] for (n, _), values in predicted.items()}
    if source == "ground_truth":
        truth = {}
        for n, c in (Label.objects.filter(span, label_set_id=label_set_id, source=LabelSource.GROUND_TRUTH)
                     .values_list("nucleus_id", "class_index").order_by("id")):
            truth[n] = c  # ascending ids: the latest ground truth wins
        return truth
    rows = CurrentLabel.objects.filter(span, label_set_id=label_set_id)
    if source == "review":
        rows = rows.filter(source=LabelSource.REVIEW)
    return dict(rows.values_list("nucleus_id", "class_index").order_by())


def detection_features(project, label_set, source: str = "current", dataset: Dataset | None = None,
                       object_type: str = "detection", chunk: int = GEOJSON_CHUNK,
                       image: Image | None = None) -> Iterator[dict]:
    """One QuPath GeoJSON Feature per nucleus of ``image``, else of ``dataset``, else of the whole project,
    in id order.

    ``geometry``: a tile's nucleus exactly as its instance mask has it (along its pixels' edges, holes
    included, as the per-image export); a slide's, which has no mask, the stored outline QuPath gave, in
    pixel-edge coordinates (outline + 0.5) with a closed ring. The simplified outlines the viewer draws lost up
    to 60 % of a small nucleus on a round trip. ``properties``: ``objectType``; ``classification``
    ``{"name", "color": [r, g, b]}`` from ``source`` in ``label_set`` (absent when the nucleus has no
    class there); ``measurements``: its area and, once the active model version predicted it in
    ``label_set``, the probability of the predicted class and the disagreement of the two branches;
    ``dataset``, ``image``, ``instance_id`` and ``nucleus_id`` say where it comes from. Nuclei are read in
    id-ordered chunks, so memory stays flat whatever the project's size.
    """
    names = {}
    if label_set is not None:   # a project with unlabelled datasets only: its nuclei, without classes
        info = _info_for(project, label_set)
        colors = to_ml_label_set(info).colors
        names = {c["index"]: (c["name"], colors[position]) for position, c in enumerate(info.classes)}
    version = active_version(project) if label_set is not None else None
    if image is not None:
        scope = Q(image=image)
    else:
        scope = Q(image__dataset=dataset) if dataset is not None else Q(image__project=project)
    datasets = dict(Dataset.objects.filter(project=project).values_list("id", "name"))
    images, masks = {}, {}
    for pk, ds, name, mask_file, slide_file in Image.objects.filter(project=project).values_list(
            "id", "dataset_id", "name", "mask_file", "slide_file"):
        images[pk] = (datasets[ds], name)
        masks[pk] = "" if slide_file else mask_file
    exact = _ExactShapes(masks)
    last = 0
    while True:
        nuclei = list(Nucleus.objects.filter(scope, id__gt=last).order_by("id")
                      .values_list("id", "image_id", "instance_id", "area", "outline", "x0", "y0", "x1", "y1")[:chunk])
        if not nuclei:
            return
        first, last = nuclei[0][0], nuclei[-1][0]
        span = Q(nucleus_id__gte=first, nucleus_id__lte=last)
        predicted = prediction_details(project, span, [label_set.pk], version) if version else {}
        classes = _chunk_classes(span, label_set.pk, source, predicted) if label_set is not None else {}
        for pk, image_id, instance_id, area, outline, *box in nuclei:
            if not outline:
                continue  # no outline was traced (never for a stored nucleus): nothing QuPath could draw
            prediction = predicted.get((pk, label_set.pk)) if label_set is not None else None
            measurements = {MEASUREMENT_AREA: area}
            if prediction is not None:
                measurements[MEASUREMENT_PROBABILITY] = prediction[1]
                measurements[MEASUREMENT_DISAGREEMENT] = prediction[2]
            index = classes.get(pk)
            dataset_name, image_name = images[image_id]
            yield outline_feature(outline, object_type, names.get(index) if index is not None else None,
                                  measurements, box=box, geometry=exact.of(image_id, instance_id),
                                  dataset=dataset_name, image=image_name, instance_id=instance_id, nucleus_id=pk)


class _ExactShapes:
    """The exact shapes of one tile's nuclei at a time, from its mask: nuclei come in id order, which keeps an
    image's together. None for a slide's (no mask: its stored outlines are the shapes). ``masks``: each image's
    mask file, empty for a slide."""

    def __init__(self, masks: dict[int, str]):
        self.masks, self.image_id, self.shapes = masks, None, {}

    def of(self, image_id: int, instance_id: int) -> dict | None:
        if image_id != self.image_id:
            self.image_id, mask_file, self.shapes = image_id, self.masks.get(image_id, ""), {}
            if mask_file:
                try:
                    self.shapes = exact_geometries(load_mask(Image(pk=image_id, mask_file=mask_file)))
                except (OSError, ValueError):
                    # Streamed: an error here would cut the download short after its 200. The stored outlines
                    # are the next best shapes; the log names the image.
                    logger.warning("image %s: its mask cannot be read; its nuclei are exported with their stored "
                                   "outlines", image_id, exc_info=True)
        return self.shapes.get(instance_id)


def detections_geojson_text(project, label_set, source: str = "current", dataset: Dataset | None = None,
                            object_type: str = "detection", chunk: int = GEOJSON_CHUNK,
                            image: Image | None = None) -> Iterator[str]:
    """:func:`detection_features` as the text of one FeatureCollection, piece by piece (for streaming)."""
    return feature_collection_text(detection_features(project, label_set, source, dataset, object_type, chunk,
                                                      image))
