"""Read side of the gallery, the film strip of predicted nuclei: which cards a page shows, in what order.

A page is the ``page``-th run of ``page_size`` predictions of the active model version in one label
set, filtered (predicted class, a confidence range, reviewed or not, by whom), ordered by one of the
scores the prediction job stored, and optionally grouped (by image, predicted class or reviewer:
the group comes first in the order, so a group's cards are contiguous across pages).

Every order is an index scan with ``LIMIT`` over the Prediction indexes ``(model_version, label_set,
score)``; the "still to review" condition is a ``NOT EXISTS`` per row on the current label's unique
index, as in the queue (:mod:`webapp.review.queue`):

- no grouping: the score's index, forwards or backwards;
- by class: one such scan per class (``class_index = c`` filtered on the score's index), each
  limited to the rows up to the page's end, concatenated in class order;
- by image: the project's images in id order and, per image, its nuclei (the unique ``(image,
  instance_id)`` index) with their predictions, sorted in the image; nuclei already reviewed in
  fully reviewed images cost one index lookup each;
- reviewed nuclei (``status=reviewed``, ``reviewer``, by reviewer): driven from the human labels,
  which are as many as there were decisions.

Reviewed nuclei pile up where the gallery starts (a reviewer accepts the most confident page after
page), and ground truth fills whole images. So that a scan does not walk over them on every request,
the unreviewed strip starts at a *frontier*, as the queue does: the score (per order) and the image
(by image) of the first prediction still without a human label; everything before it has one. It is
kept in the cache (shared by the processes with Redis), moved on every :data:`FRONTIER_REFRESH` seconds
and searched again from the start every :data:`FRONTIER_TTL` seconds; an undo forgets the frontiers of
its label set, as stored predictions do (:func:`webapp.core.cache.forget_frontiers`: a new generation in
the keys of the queue's frontiers and the gallery's alike).

Shown values: confidence is the probability of the predicted class (``1 - least_confidence``),
margin the gap between the two most probable classes (``1 - margin`` as stored, see
:mod:`mlcore.uncertainty`), disagreement the branches' Jensen-Shannon divergence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from webapp.core import sql
from webapp.core.cache import FRONTIER_TTL, cache_get, cache_set, frontier_generation_key, frontier_key
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelSet, LabelSource, Nucleus
from webapp.projects.models import Project
from webapp.training.models import ModelVersion, Prediction

from . import queue
from .models import ReviewLease

# sort: (label, stored column, whether the column stores 1 - the value shown, default order)
SORTS: dict[str, tuple[str, str, bool, str]] = {
    "confidence": ("Confidence", "least_confidence", True, "desc"),
    "margin": ("Margin", "margin", True, "asc"),
    "disagreement": ("Branch disagreement", "disagreement", False, "desc"),
}
ORDERS = ("asc", "desc")
GROUPS: dict[str, str] = {"": "No grouping", "image": "Image", "class": "Predicted class", "reviewer": "Reviewer"}
STATUSES: dict[str, str] = {"unreviewed": "Not reviewed yet", "reviewed": "Reviewed"}
DEFAULT_SORT = "confidence"
SORT_CHOICES = [  # what the page's sort menu offers: (sort, order, label)
    ("confidence", "desc", "Most confident first"),
    ("confidence", "asc", "Least confident first"),
    ("margin", "asc", "Smallest margin first (closest calls)"),
    ("margin", "desc", "Largest margin first"),
    ("disagreement", "desc", "Branches disagree most first"),
    ("disagreement", "asc", "Branches disagree least first"),
]


@dataclass
class GallerySpec:
    project: Project
    label_set: LabelSet
    version: ModelVersion
    user: object
    status: str = "unreviewed"
    class_index: int | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    reviewer: object = None
    sort: str = DEFAULT_SORT
    order: str = "desc"
    group: str = ""
    page: int = 1
    page_size: int = 48

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


@dataclass
class Card:
    prediction_id: int
    nucleus_id: int
    class_index: int
    probability: float
    margin: float          # as stored (1 - gap)
    disagreement: float
    group_key: object = None


FRONTIER_REFRESH = 10.0
_EMPTY = object()


def _unlabelled(ref: str, label_set_id: int) -> tuple[str, list]:
    return (f"NOT EXISTS (SELECT 1 FROM {sql.table(CurrentLabel)} c WHERE c.nucleus_id = {ref} "
            f"AND c.label_set_id = %s AND c.source IN (%s, %s))",
            [label_set_id, *(source.value for source in queue.HUMAN_SOURCES)])


def _cached_frontier(key: str, search):
    """``search(start)`` finds the frontier from ``start`` on (None: from the very start)."""
    now = time.time()  # wall-clock: the entry is shared between processes
    cached = cache_get(key)  # (search from the start at, refresh at, nothing left, value)
    if cached is not None and cached[1] > now:
        return _EMPTY if cached[2] else cached[3]
    moving = cached is not None and cached[0] > now
    if moving and cached[2]:
        value, search_at = _EMPTY, cached[0]
    else:
        value = search(cached[3] if moving else None)
        search_at = cached[0] if moving else now + FRONTIER_TTL
    empty = value is _EMPTY
    cache_set(key, (search_at, now + FRONTIER_REFRESH, empty, None if empty else value),
              timeout=max(1.0, search_at - now))
    return value


def frontier_cache_key(spec: "GallerySpec", what: str) -> str:
    generation = cache_get(frontier_generation_key(spec.label_set.pk)) or 0
    return frontier_key(generation, spec.version.pk, spec.label_set.pk, f"gallery-{what}", None, False)


def score_frontier(spec: "GallerySpec"):
    """The score of the first prediction, in the chosen order, without a human label."""
    _, column, _, _ = SORTS[spec.sort]
    ascending = "ASC" in _order(spec, "p").split(",")[0]
    condition, params = _unlabelled("p.nucleus_id", spec.label_set.pk)

    def search(start):
        bound = ""
        extra: list = []
        if start is not None:
            bound, extra = f" AND p.{column} {'>=' if ascending else '<='} %s", [start]
        row = sql.fetch_one(f"SELECT p.{column} FROM {sql.table(Prediction)} p WHERE p.model_version_id = %s "
                            f"AND p.label_set_id = %s AND {condition}{bound} "
                            f"ORDER BY p.{column} {'ASC' if ascending else 'DESC'} LIMIT 1",
                            [spec.version.pk, spec.label_set.pk, *params, *extra])
        return _EMPTY if row is None else row[0]

    return _cached_frontier(frontier_cache_key(spec, f"{column}-{'asc' if ascending else 'desc'}"), search)


def image_frontier(spec: "GallerySpec"):
    """The first image (by id) of the project with a prediction still without a human label."""
    condition, params = _unlabelled("p.nucleus_id", spec.label_set.pk)

    def search(start):
        bound, extra = ("", []) if start is None else (" AND i.id >= %s", [start])
        row = sql.fetch_one(f"SELECT i.id FROM {sql.table(Image)} i WHERE i.project_id = %s{bound} AND EXISTS ("
                            f"SELECT 1 FROM {sql.table(Nucleus)} n JOIN {sql.table(Prediction)} p "
                            f"ON p.nucleus_id = n.id AND p.model_version_id = %s AND p.label_set_id = %s "
                            f"WHERE n.image_id = i.id AND {condition}) ORDER BY i.id LIMIT 1",
                            [spec.project.pk, *extra, spec.version.pk, spec.label_set.pk, *params])
        return _EMPTY if row is None else row[0]

    return _cached_frontier(frontier_cache_key(spec, "image"), search)


def _order(spec: GallerySpec, ref: str) -> str:
    """ORDER BY of the chosen sort on the prediction columns of ``ref`` (``p`` or a subquery alias),
    with the prediction id as tie-break in the same direction (so the score index serves it)."""
    _, column, inverted, _ = SORTS[spec.sort]
    descending = (spec.order == "desc") != inverted
    direction = "DESC" if descending else "ASC"
    return f"{ref}.{column} {direction}, {ref}.id {direction}"


def _conditions(spec: GallerySpec, *, class_index: int | None = None, frontier=None) -> tuple[list[str], list[str], list]:
    """(joins, WHERE conditions, their parameters in order: joins first) for the predictions ``p``."""
    joins: list[str] = []
    where = ["p.model_version_id = %s", "p.label_set_id = %s"]
    join_params: list = []
    params: list = [spec.version.pk, spec.label_set.pk]
    wanted_class = class_index if class_index is not None else spec.class_index
    if wanted_class is not None:
        where.append("p.class_index = %s")
        params.append(wanted_class)
    # Confidence = 1 - least_confidence: a range on the indexed column.
    if spec.min_confidence is not None:
        where.append("p.least_confidence <= %s")
        params.append(1.0 - spec.min_confidence)
    if spec.max_confidence is not None:
        where.append("p.least_confidence >= %s")
        params.append(1.0 - spec.max_confidence)
    if spec.status == "unreviewed":
        if frontier is not None:  # everything before it has a human label: start there
            _, column, _, _ = SORTS[spec.sort]
            ascending = "ASC" in _order(spec, "p").split(",")[0]
            where.append(f"p.{column} {'>=' if ascending else '<='} %s")
            params.append(frontier)
        condition, condition_params = _unlabelled("p.nucleus_id", spec.label_set.pk)
        where.append(condition)
        params += condition_params
        # Not the nucleus another reviewer has on their review page right now.
        where.append(f"NOT EXISTS (SELECT 1 FROM {sql.table(ReviewLease)} r WHERE r.nucleus_id = p.nucleus_id "
                     f"AND r.label_set_id = %s AND r.expires_at > %s AND r.user_id <> %s AND NOT r.decided)")
        params += [spec.label_set.pk, queue._dt(timezone.now()), spec.user.pk]
    else:
        joins.append(f"JOIN {sql.table(CurrentLabel)} c ON c.nucleus_id = p.nucleus_id AND c.label_set_id = %s "
                     f"AND c.source = %s JOIN {sql.table(Label)} l ON l.id = c.label_id")
        join_params += [spec.label_set.pk, LabelSource.REVIEW.value]
        if spec.reviewer is not None:
            where.append("l.author_id = %s")
            params.append(spec.reviewer.pk)
        if spec.group == "reviewer":
            joins.append(f"LEFT JOIN {sql.table(get_user_model())} u ON u.id = l.author_id")
    return joins, where, join_params + params


COLUMNS = "p.id, p.nucleus_id, p.class_index, p.probability, p.margin, p.disagreement, p.least_confidence"


def _scan(columns: str, joins: list[str], where: list[str], spec: GallerySpec, sliver: bool, alias: str) -> str:
    """One ordered index scan of the predictions ``p`` with this sliver value, up to a LIMIT (parameters: the
    conditions', the sliver value, the limit). A subquery: SQLite allows no parenthesised SELECT, nor ORDER BY
    ... LIMIT, as a member of a UNION."""
    return (f"SELECT * FROM (SELECT {columns} FROM {sql.table(Prediction)} p {' '.join(joins)} "
            f"WHERE {' AND '.join([*where, 'p.sliver = %s'])} ORDER BY {_order(spec, 'p')} LIMIT %s) {alias}")


def _cards(rows) -> list[Card]:
    return [Card(pk, nucleus_id, class_index, probability, margin, disagreement, group_key)
            for pk, nucleus_id, class_index, probability, margin, disagreement, _lc, group_key in rows]


def page_cards(spec: GallerySpec, classes: list[dict]) -> tuple[list[Card], bool]:
    """The cards of the page (at most ``page_size``) and whether more follow."""
    end = spec.offset + spec.page_size + 1  # one more than the page: is there a next page?
    prediction = sql.table(Prediction)
    frontier = None
    if spec.status == "unreviewed":
        frontier = score_frontier(spec)
        if frontier is _EMPTY:  # every prediction has a human label
            return [], False
    if spec.group is None or (spec.group == "class" and spec.class_index is None):
        # The score indexes lead with (version, label set, sliver): one range scan per sliver value (and class,
        # grouped by class), each stopping at the page's end, merged. Ordered by the score alone, SQLite sorted
        # every prediction of the label set for each page (0.4-0.8 s at 900,000 nuclei).
        by_class = spec.group == "class"
        parts, params = [], []
        for cls in classes if by_class else [None]:
            joins, where, part_params = _conditions(spec, class_index=cls["index"] if cls else None,
                                                    frontier=frontier)
            for sliver in (False, True):
                parts.append(_scan(f"{COLUMNS}, {'p.class_index' if by_class else 'NULL'} AS group_key", joins,
                                   where, spec, sliver, f"c{cls['index'] if cls else ''}s{int(sliver)}"))
                params += [*part_params, sliver, end]
        if not parts:
            return [], False
        statement = (f"SELECT * FROM ({' UNION ALL '.join(parts)}) x "
                     f"ORDER BY {'x.group_key, ' if by_class else ''}{_order(spec, 'x')} LIMIT %s OFFSET %s")
        rows = sql.fetch_all(statement, [*params, spec.page_size + 1, spec.offset])
    elif spec.group == "image" and spec.status == "unreviewed" and connection.vendor == "postgresql":
        # The project's images in order from the first one with work left; per image, its nuclei's
        # predictions sorted (LATERAL, through the unique (image, instance_id) index). SQLite has no
        # LATERAL: it sorts the whole join below, fine at the sizes it is for.
        first_image = image_frontier(spec)
        if first_image is _EMPTY:
            return [], False
        joins, where, params = _conditions(spec, frontier=frontier)
        statement = (
            f"SELECT x.* FROM {sql.table(Image)} i CROSS JOIN LATERAL ("
            f"SELECT {COLUMNS}, n.image_id AS group_key FROM {sql.table(Nucleus)} n "
            f"JOIN {prediction} p ON p.nucleus_id = n.id {' '.join(joins)} "
            f"WHERE n.image_id = i.id AND {' AND '.join(where)} ORDER BY {_order(spec, 'p')} LIMIT %s) x "
            f"WHERE i.project_id = %s AND i.id >= %s ORDER BY i.id, {_order(spec, 'x')} LIMIT %s OFFSET %s")
        rows = sql.fetch_all(statement, [*params, end, spec.project.pk, first_image, spec.page_size + 1, spec.offset])
    else:
        joins, where, params = _conditions(spec, frontier=frontier)
        group_column, group_order = "NULL", ""
        if spec.group == "image":
            joins.append(f"JOIN {sql.table(Nucleus)} n ON n.id = p.nucleus_id")
            group_column, group_order = "n.image_id", "group_key, "
        elif spec.group == "class":
            group_column, group_order = "p.class_index", "group_key, "
        elif spec.group == "reviewer":
            group_column, group_order = f"u.{get_user_model().USERNAME_FIELD}", "group_key NULLS LAST, "
        statement = (f"SELECT {COLUMNS}, {group_column} AS group_key FROM {prediction} p {' '.join(joins)} "
                     f"WHERE {' AND '.join(where)} ORDER BY {group_order}{_order(spec, 'p')} LIMIT %s OFFSET %s")
        rows = sql.fetch_all(statement, [*params, spec.page_size + 1, spec.offset])
    cards = _cards(rows)
    return cards[:spec.page_size], len(cards) > spec.page_size


def card_details(cards: list[Card], label_set: LabelSet) -> dict[int, dict]:
    """What each card shows besides its prediction, by nucleus id: the nucleus, its image and
    dataset, and its current label in the label set with its author (two statements for the page)."""
    ids = [card.nucleus_id for card in cards]
    if not ids:
        return {}
    nuclei = {n.pk: n for n in Nucleus.objects.filter(pk__in=ids).select_related("image")}
    dataset_names = dict(Dataset.objects.filter(pk__in={n.image.dataset_id for n in nuclei.values()})
                         .values_list("pk", "name"))
    currents = {c.nucleus_id: c for c in CurrentLabel.objects.filter(label_set_id=label_set.pk, nucleus_id__in=ids)
                .select_related("label", "label__author")}
    return {pk: {"nucleus": nucleus, "dataset": dataset_names.get(nucleus.image.dataset_id, ""),
                 "current": currents.get(pk)} for pk, nucleus in nuclei.items()}
