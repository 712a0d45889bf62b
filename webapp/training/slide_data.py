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
never the nuclei), and an undo made later that leaves a nucleus unlabelled does not take it out of that resume
(it is read unlabelled); the labels themselves are the current ones, as a tile's. What was labelled then is
told by the label history (:func:`in_effect_as_of`).

The validation split takes squares of :data:`BLOCK` level-0 pixels of a slide as its groups, as it takes
whole tiles: neighbouring nuclei share tissue, and one on each side would flatter the validation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db.models import Count, Q

from mlcore.data import CropRecord
from mlcore.slides import DEFAULT_MODEL_MPP, SlideError
from mlcore.types import quoted
from webapp.datasets import taken_back
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


def in_effect_as_of(scope: Q, as_of) -> dict[tuple[int, int], str]:
    """The labels in effect at ``as_of`` of the (nucleus, label set) pairs of ``scope`` (a Q on Label) whose label
    changed since: {(nucleus id, label set id): source} of those that were labelled then in a trained source.

    A pair's current label is its latest Label row, unless an undo took that row back without restoring one
    (:mod:`webapp.datasets.taken_back`). So a pair whose current label is from ``as_of`` or before is as it was
    then, and the others changed since: a row was appended (a review, an undo restoring the one before), or the
    label was taken back. Their label then is their latest row by ``as_of``, unless it was taken back by then."""
    labels = Label.objects.filter(scope)
    changed = set(labels.filter(created_at__gt=as_of).values_list("nucleus_id", "label_set_id").distinct())
    since = taken_back.label_ids(labels, after=as_of)
    changed.update(Label.objects.filter(pk__in=since).values_list("nucleus_id", "label_set_id"))
    nuclei = sorted({nucleus_id for nucleus_id, _ in changed})
    latest: dict[tuple[int, int], tuple[int, str]] = {}
    for start in range(0, len(nuclei), FETCH):
        rows = (Label.objects.filter(nucleus_id__in=nuclei[start:start + FETCH], created_at__lte=as_of)
                .order_by("id").values_list("id", "nucleus_id", "label_set_id", "source"))
        for pk, nucleus_id, label_set_id, source in rows:
            if (nucleus_id, label_set_id) in changed:
                latest[nucleus_id, label_set_id] = (pk, source)
    gone = set()
    ids = sorted(pk for pk, _ in latest.values())
    for start in range(0, len(ids), FETCH):
        gone |= taken_back.label_ids(Label.objects.filter(pk__in=ids[start:start + FETCH]), until=as_of)
    return {pair: source for pair, (pk, source) in latest.items() if pk not in gone and source in TRAINED_SOURCES}


def labelled_slides(project, as_of=None) -> list[tuple[Image, int]]:
    """The project's slide images with labelled nuclei, and how many, in id order; with ``as_of`` (a training's
    data snapshot), the nuclei labelled then (whatever was reviewed or undone since)."""
    rows = CurrentLabel.objects.filter(nucleus__image__project=project, source__in=TRAINED_SOURCES).exclude(
        nucleus__image__slide_file="")
    if as_of is not None:
        rows = rows.filter(label__created_at__lte=as_of)   # as they were then (in_effect_as_of)
    counts = dict(rows.values("nucleus__image_id").annotate(n=Count("nucleus_id", distinct=True))
                  .values_list("nucleus__image_id", "n"))
    if as_of is not None:
        then = {nucleus_id for nucleus_id, _ in in_effect_as_of(
            Q(nucleus__image__project=project) & ~Q(nucleus__image__slide_file=""), as_of)}
        then = sorted(then - set(rows.filter(nucleus_id__in=then).values_list("nucleus_id", flat=True)))
        for start in range(0, len(then), FETCH):
            for image_id in Nucleus.objects.filter(pk__in=then[start:start + FETCH]).values_list("image_id", flat=True):
                counts[image_id] = counts.get(image_id, 0) + 1
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
    :func:`labelled_slides` (the nuclei labelled then, with their current labels; a nucleus counts as reviewed
    first if it was then)."""
    from mlcore.infer import slide_crops
    from webapp.datasets.slides import open_image_slide

    data = SlideTrainingData()
    limit = int(settings.SLIDE_TRAINING_MAX_NUCLEI)
    quotas = shares([n for _, n in slides], limit)
    total = sum(quotas)
    done_before = 0
    for (image, _), quota in zip(slides, quotas):
        labels: dict[int, dict[str, tuple[int, str]]] = defaultdict(dict)  # {nucleus: {set: (class, source)}}
        labelled: set[int] = set()   # the nuclei labelled as of as_of (its data snapshot): those read
        reviewed: set[int] = set()   # ...of which reviewed then: they come first
        rows = (CurrentLabel.objects.filter(nucleus__image=image, source__in=TRAINED_SOURCES,
                                            label_set__name__in=label_sets)
                .values_list("nucleus_id", "label_set__name", "class_index", "source", "label__created_at"))
        for nucleus_id, set_name, class_index, source, created_at in rows.iterator(chunk_size=20_000):
            labels[nucleus_id][set_name] = (class_index, source)
            if as_of is None or created_at <= as_of:   # as it was then; the others changed since
                labelled.add(nucleus_id)
                if source == LabelSource.REVIEW:
                    reviewed.add(nucleus_id)
        if as_of is not None:
            for (nucleus_id, _), source in in_effect_as_of(Q(nucleus__image=image, label_set__name__in=label_sets),
                                                           as_of).items():
                labelled.add(nucleus_id)
                if source == LabelSource.REVIEW:
                    reviewed.add(nucleus_id)
        # A nucleus labelled then whose labels were all taken back since is read unlabelled: the same nuclei.
        chosen = sorted(labelled, key=lambda pk: (pk not in reviewed, _draw_order(pk)))[:quota]
        if len(labelled) > quota:
            data.notes.append(f"slide {quoted(image.name)}: {quota:,} of its {len(labelled):,} labelled nuclei "
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
