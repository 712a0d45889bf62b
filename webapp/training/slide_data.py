"""Whole-slide images in a training: their labelled nuclei, cut from the slide.

A tile image is read whole and every nucleus of it goes into the training table. A slide holds 10^5-10^6
nuclei and does not fit in memory, so only its labelled nuclei (the detections' classes and the reviews) go
in, each cut from a region of the slide read at the model's scale (:func:`mlcore.infer.slide_crops`, as the
slide's classification cuts them). The reviews are what a reviewer taught the model: they come first; the
ground truth fills the rest, up to ``SLIDE_TRAINING_MAX_NUCLEI`` for all the project's slides together, since
every crop is held in memory (24 KiB each with the default crops, twice over while the table is built).

Which ground truth is taken is drawn by a fixed hash of the nucleus's id, so that the same labels give the
same table (a resumed training checks it). Which nuclei are taken is decided as of the training's data
snapshot (``as_of``): a review of an unlabelled nucleus made later adds it to the next training, not to a
resume of this one, which must read the nuclei the stopped training read (a tile's review changes a label,
never the nuclei); the labels themselves are the current ones, as a tile's.

The validation split takes squares of :data:`BLOCK` level-0 pixels of a slide as its groups, as it takes
whole tiles: neighbouring nuclei share tissue, and one on each side would flatter the validation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q

from mlcore.data import CropRecord
from mlcore.slides import DEFAULT_MODEL_MPP, SlideError
from mlcore.types import quoted
from webapp.datasets.models import CurrentLabel, Image, Label, LabelSource, Nucleus

BLOCK = 2048          # level-0 pixels: the side of one validation-split group of a slide
FETCH = 5000          # nuclei read from the database per query
TRAINED_SOURCES = (LabelSource.GROUND_TRUTH, LabelSource.REVIEW)


@dataclass
class SlideTrainingData:
    """What the project's slides add to a training: ``records`` for mlcore's table, ``counts`` of labels per
    label set and source ({name: {source: n}}, as runner.known_labels counts a tile's), ``nuclei`` taken per
    image id, and ``notes`` for the job's log (slides left out, nuclei over the limit)."""

    records: list[CropRecord] = field(default_factory=list)
    counts: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    nuclei: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _labelled_as_of(rows, as_of):
    """The current labels of ``rows`` (CurrentLabel) whose nucleus was labelled at ``as_of`` already (a human
    label of it in any label set by then); all of them without ``as_of``."""
    if as_of is None:
        return rows
    before = Label.objects.filter(nucleus_id=OuterRef("nucleus_id"), source__in=TRAINED_SOURCES, created_at__lte=as_of)
    return rows.filter(Q(label__created_at__lte=as_of) | Exists(before))


def labelled_slides(project, as_of=None) -> list[tuple[Image, int]]:
    """The project's slide images with labelled nuclei, and how many, in id order; with ``as_of`` (a training's
    data snapshot), the nuclei labelled by then."""
    rows = CurrentLabel.objects.filter(nucleus__image__project=project, source__in=TRAINED_SOURCES)
    counts = dict(_labelled_as_of(rows, as_of).exclude(nucleus__image__slide_file="").values("nucleus__image_id")
                  .annotate(n=Count("nucleus_id", distinct=True)).values_list("nucleus__image_id", "n"))
    images = Image.objects.filter(pk__in=counts).select_related("dataset__label_set").order_by("id")
    return [(image, counts[image.pk]) for image in images]


def shares(wanted: list[int], limit: int) -> list[int]:
    """How many nuclei each slide gives when together they may give ``limit``: each its own count, or an equal
    share of what is left where that is less (a slide with few labels leaves the rest to the others)."""
    given = [0] * len(wanted)
    left = limit
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    for position, i in enumerate(order):
        given[i] = min(wanted[i], left // (len(order) - position))
        left -= given[i]
    return given


def nuclei_to_read(slides: list[tuple[Image, int]]) -> int:
    """How many labelled nuclei a training reads of ``slides`` (:func:`labelled_slides`): theirs, within
    SLIDE_TRAINING_MAX_NUCLEI (what :func:`slide_training_data` takes, a slide that cannot be read aside)."""
    return sum(shares([n for _, n in slides], max(0, int(settings.SLIDE_TRAINING_MAX_NUCLEI))))


def _draw_order(nucleus_id: int) -> int:
    """A fixed pseudo-random rank (Knuth's multiplicative hash): the same nuclei are drawn every time."""
    return (nucleus_id * 2654435761) % 2**32


def slide_training_data(slides: list[tuple[Image, int]], label_sets: set[str], spec, *, cache_dir,
                        split_names: dict[int, str], report=None, should_stop=None, as_of=None) -> SlideTrainingData:
    """The labelled nuclei of ``slides`` (:func:`labelled_slides`) in the label sets named, as crop records of
    ``spec``. ``split_names``: each dataset's name in the table (runner.table_names). ``report(done, total,
    message)`` as the crops are cut. A slide this worker cannot read is left out and named in ``notes``, as
    the slides' classification leaves it out. ``as_of``: the training's data snapshot, as given to
    :func:`labelled_slides` (the nuclei labelled by then, with their current labels; a nucleus counts as reviewed
    first if it was by then)."""
    from mlcore.infer import slide_crops
    from webapp.datasets.slides import open_image_slide

    data = SlideTrainingData()
    limit = int(settings.SLIDE_TRAINING_MAX_NUCLEI)
    quotas = shares([n for _, n in slides], limit)
    total = sum(quotas)
    done_before = 0
    for (image, labelled), quota in zip(slides, quotas):
        labels: dict[int, dict[str, tuple[int, str]]] = defaultdict(dict)  # {nucleus: {set: (class, source)}}
        reviewed: set[int] = set()
        changed: set[int] = set()   # nuclei with a label newer than as_of: reviewed first if they were by then
        rows = (_labelled_as_of(CurrentLabel.objects.filter(nucleus__image=image, source__in=TRAINED_SOURCES,
                                                            label_set__name__in=label_sets), as_of)
                .values_list("nucleus_id", "label_set__name", "class_index", "source", "label__created_at"))
        for nucleus_id, set_name, class_index, source, created_at in rows.iterator(chunk_size=20_000):
            labels[nucleus_id][set_name] = (class_index, source)
            if as_of is not None and created_at > as_of:
                changed.add(nucleus_id)
            elif source == LabelSource.REVIEW:
                reviewed.add(nucleus_id)
        changed = sorted(changed - reviewed)
        for start in range(0, len(changed), FETCH):
            reviewed.update(Label.objects.filter(
                nucleus_id__in=changed[start:start + FETCH], label_set__name__in=label_sets,
                source=LabelSource.REVIEW, created_at__lte=as_of).values_list("nucleus_id", flat=True))
        chosen = sorted(labels, key=lambda pk: (pk not in reviewed, _draw_order(pk)))[:quota]
        if len(labels) > quota:
            data.notes.append(f"slide {quoted(image.name)}: {quota:,} of its {len(labels):,} labelled nuclei "
                              f"taken ({sum(pk in reviewed for pk in chosen):,} reviewed), within the "
                              f"SLIDE_TRAINING_MAX_NUCLEI limit of {limit:,} for the project's slides")
        if not chosen:
            continue
        nuclei = _nuclei(chosen)
        try:
            slide = open_image_slide(image)
        except SlideError as exc:  # public: it names the slide, never a server path
            data.notes.append(f"slide {quoted(image.name)} left out: it could not be read here ({exc})")
            continue

        def progress(done: int, count: int, image=image, start=done_before) -> None:
            if report:
                report(start + done, total, f"slide {image.name}: {done:,}/{count:,} labelled nuclei cut")

        crops = slide_crops(spec, slide, [n for _, _, n in nuclei], model_mpp=DEFAULT_MODEL_MPP,
                            cache_dir=cache_dir, cache_key=cache_key(image.checksum, image.pk), progress=progress,
                            should_stop=should_stop)
        done_before += len(nuclei)
        data.nuclei[image.pk] = len(nuclei)
        # _nuclei gives them square by square: each record's crops are a slice (a view) of the slide's, not a copy.
        start = 0
        while start < len(nuclei):
            square = _square(nuclei[start][2])
            end = start
            while end < len(nuclei) and _square(nuclei[end][2]) == square:
                end += 1
            name = f"{image.dataset_id}/{image.name}/block {square[1]},{square[0]}"
            block_labels: dict[str, dict[int, int]] = defaultdict(dict)
            for nucleus_id, instance_id, _ in nuclei[start:end]:
                for set_name, (class_index, source) in labels[nucleus_id].items():
                    block_labels[set_name][instance_id] = class_index
                    data.counts[set_name][source] += 1
            ids = np.array([instance_id for _, instance_id, _ in nuclei[start:end]], np.int64)
            data.records.append(CropRecord(crops=crops[start:end], ids=ids, labels=dict(block_labels),
                                           dataset=split_names[image.dataset_id], name=name, group=name))
            start = end
    return data


def cache_key(checksum: str, image_id: int) -> str:
    """A slide's key in the crop cache: the slide and its image row. The same slide in two projects (each its own
    labelled nuclei) keeps an entry for each, where one entry per slide had each project's training replace the
    other's; and the sweep removes the entries of image rows that are gone (webapp.training.orphans)."""
    return f"{checksum} image {image_id}"


def _square(nucleus) -> tuple[int, int]:
    """The validation split's square (row, column) of a nucleus, by its centroid."""
    x, y = nucleus.centroid
    return int(y // BLOCK), int(x // BLOCK)


def _nuclei(ids: list[int]) -> list[tuple]:
    """(nucleus id, instance id, SlideNucleus) of ``ids``, square by square (:func:`_square`) and in reading
    order in each (top to bottom, then left to right)."""
    from mlcore.slide_nuclei import SlideNucleus

    rows = []
    for start in range(0, len(ids), FETCH):
        rows += Nucleus.objects.filter(pk__in=ids[start:start + FETCH]).values_list(
            "id", "instance_id", "x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area", "outline")
    nuclei = [(pk, instance_id, SlideNucleus(outline=np.asarray(outline, np.int32).reshape(-1, 2),
                                             bbox=(x0, y0, x1, y1), centroid=(cx, cy), area=area))
              for pk, instance_id, x0, y0, x1, y1, cx, cy, area, outline in rows]
    nuclei.sort(key=lambda entry: (_square(entry[2]), entry[2].bbox[1], entry[2].bbox[0], entry[0]))
    return nuclei
