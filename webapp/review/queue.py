"""Read side of the review queue: which nuclei come next, what the page shows, progress and history.

The queue of a label set is the nuclei of the project ordered by an uncertainty score of the
active model version's predictions (or in random order, which needs no predictions). Every query
here is an index scan with ``LIMIT`` and ``NOT EXISTS`` anti-joins on the current labels, the leases
and the skips (each a unique-index lookup), so that it stays fast at a million nuclei:

- ``entropy``, ``least_confidence``, ``disagreement``: Prediction indexes ``(model_version,
  label_set, -score)`` scanned forwards;
- ``margin``: the stored margin is ``1 - (p_top1 - p_top2)`` (higher = more uncertain, see
  :mod:`mlcore.uncertainty`), so "smallest gap first" is the index ``(model_version, label_set,
  margin)`` scanned backwards;
- ``random``: random ids of the project's nucleus id range, looked up by primary key (a scan from a
  random pivot only when the queue is nearly done).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, Max, OuterRef, Sum
from django.urls import reverse
from django.utils import timezone

from webapp.core import sql
from webapp.core.cache import (FRONTIER_TTL, cache_get, cache_set, frontier_generation_key, frontier_key,
                               label_set_classes_key, nucleus_bounds_key, prediction_count_key)
from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, LabelSource, Nucleus
from webapp.datasets.slide_queries import tallest_nucleus
from webapp.projects.models import Project
from webapp.training.models import ModelVersion, Prediction

from .models import ConflictSettlement, ReviewLease, ReviewSkip, ReviewUndo

LEASE_SECONDS = 300                     # an abandoned item comes back after five minutes
SKIP_COOLDOWN = timedelta(hours=1)      # a skipped item is not offered to the same reviewer for an hour
HUMAN_SOURCES = (LabelSource.GROUND_TRUTH, LabelSource.REVIEW)
CANDIDATES = 8                          # rows fetched per claim attempt (the first free one wins)
REGION_MIN_SIDE = 96                    # px of tissue shown around a nucleus, at least...
REGION_FACTOR = 4                       # ...and four times its larger side
CONTEXT_FACTOR = 4                      # the zoomed-out view: four times the close-up's side...
CONTEXT_MAX_SIDE = 1024                 # ...at most this (shown at 1 screen px per tissue px where it fits)

STRATEGIES = {  # key: (label, Prediction ordering, description)
    "entropy": ("Entropy", "-entropy", "most uncertain first: highest entropy of the class probabilities"),
    "least_confidence": ("Least confidence", "-least_confidence", "lowest probability of the predicted class first"),
    "margin": ("Margin", "-margin", "smallest gap between the two most probable classes first"),
    "disagreement": ("Branch disagreement", "-disagreement",
                     "where the base head and the label-correlation branch disagree most"),
    "random": ("Random", None, "random order; needs no predictions"),
}
DEFAULT_STRATEGY = "entropy"


@dataclass
class QueueSpec:
    """What a reviewer asks the queue for."""

    project: Project
    label_set: LabelSet
    user: object
    strategy: str = DEFAULT_STRATEGY
    include_labelled: bool = False
    exclude: tuple[int, ...] = ()
    version: ModelVersion | None = None
    # Datasets whose nuclei are not offered: being deleted (webapp.review.operations.do_claim_next).
    exclude_datasets: tuple[int, ...] = ()

    @property
    def uses_predictions(self) -> bool:
        return self.strategy != "random"


# ------------------------------------------------------------------------------------- candidates

def _dt(value):
    """A timestamp as the database compares it (SQLite compares text in Django's storage format)."""
    return connection.ops.adapt_datetimefield_value(value)


def free_conditions(spec: QueueSpec, ref: str, now, *, with_skips: bool = True) -> tuple[str, list]:
    """The SQL conditions (and their parameters) that make the nucleus ``ref`` free for this reviewer:
    ``NOT EXISTS`` anti-joins, each a unique-index lookup per candidate row, on its human label (or,
    with ``include_labelled``, this reviewer's own review), a running lease and, with ``with_skips``,
    their recent skip; then the ids the client asked to exclude."""
    label_set, user = spec.label_set.pk, spec.user.pk
    if spec.include_labelled:
        # Offer labelled nuclei too (second opinions), but never one this reviewer already reviewed.
        conditions = [f"NOT EXISTS (SELECT 1 FROM {sql.table(Label)} l WHERE l.nucleus_id = {ref} "
                      f"AND l.label_set_id = %s AND l.author_id = %s AND l.source = %s)"]
        params = [label_set, user, LabelSource.REVIEW.value]
    else:
        conditions = [f"NOT EXISTS (SELECT 1 FROM {sql.table(CurrentLabel)} c WHERE c.nucleus_id = {ref} "
                      f"AND c.label_set_id = %s AND c.source IN (%s, %s))"]
        params = [label_set, *(source.value for source in HUMAN_SOURCES)]
    conditions.append(f"NOT EXISTS (SELECT 1 FROM {sql.table(ReviewLease)} r WHERE r.nucleus_id = {ref} "
                      f"AND r.label_set_id = %s AND r.expires_at > %s)")
    params += [label_set, _dt(now)]
    if with_skips:
        conditions.append(f"NOT EXISTS (SELECT 1 FROM {sql.table(ReviewSkip)} s WHERE s.nucleus_id = {ref} "
                          f"AND s.label_set_id = %s AND s.user_id = %s AND s.skipped_at > %s)")
        params += [label_set, user, _dt(now - SKIP_COOLDOWN)]
    if spec.exclude:
        conditions.append(f"{ref} NOT IN ({', '.join(['%s'] * len(spec.exclude))})")
        params += list(spec.exclude)
    if spec.exclude_datasets:
        conditions.append(f"NOT EXISTS (SELECT 1 FROM {sql.table(Nucleus)} xn JOIN {sql.table(Image)} xi ON "
                          f"xi.id = xn.image_id WHERE xn.id = {ref} AND xi.dataset_id IN "
                          f"({', '.join(['%s'] * len(spec.exclude_datasets))}))")
        params += list(spec.exclude_datasets)
    return " AND ".join(conditions), params


def _ids(statement: str, params: list) -> list[int]:
    return [row[0] for row in sql.fetch_all(statement, params)]


# ---- the frontier of a queue
#
# Reviewed nuclei pile up at the top of each ranking (that is where the queue hands out from), so a
# plain index scan would walk over all of them on every request, slower with every decision. The
# "frontier" bounds the scan: the score of the first prediction that is still to review and was
# never touched by the queue (no lease row, no skip row). Everything ranked above it is reviewed or
# touched; the touched ones (held, released, skipped: a handful of rows, read from the lease and
# skip tables) are looked up directly, the rest of the queue is scanned from the frontier down.
# Lease rows are never deleted (a decision marks its row decided, which counts as reviewed, not
# touched: an undo makes it touched again), so "touched" does not wear off.
#
# The frontier is a hint kept in the cache (shared by the processes with Redis): moved down every
# FRONTIER_REFRESH seconds (a short walk over what was reviewed meanwhile) and searched again from the
# top every FRONTIER_TTL seconds. A nucleus that loses its human label is found at once all the same:
# only an undo does that, and an undo leases the nucleus back to its reviewer (touched); the undo also
# forgets the frontiers of its label set (a new generation in their keys). Reviewers who ask for
# labelled nuclei too ("still to review" = "not reviewed by me") have a frontier of their own.
FRONTIER_REFRESH = 10.0
_EMPTY = object()


def frontier_cache_key(spec: QueueSpec, sliver: bool = False) -> str:
    generation = cache_get(frontier_generation_key(spec.label_set.pk)) or 0
    return frontier_key(generation, spec.version.pk, spec.label_set.pk, spec.strategy,
                        spec.user.pk if spec.include_labelled else None, sliver)


def _touched(label_set_id: int, ref: str = "nucleus_id") -> list:
    return [Exists(ReviewLease.objects.filter(nucleus_id=OuterRef(ref), label_set_id=label_set_id, decided=False)),
            Exists(ReviewSkip.objects.filter(nucleus_id=OuterRef(ref), label_set_id=label_set_id))]


def queue_frontier(spec: QueueSpec, sliver: bool = False):
    """The score of the first prediction (in queue order, among slivers or among the others) still to
    review and untouched by the queue; ``_EMPTY`` when there is none."""
    key = frontier_cache_key(spec, sliver)
    now = time.time()  # wall-clock: the entry is shared between processes
    cached = cache_get(key)  # (search from the top at, refresh at, score or None for "none left")
    if cached is not None and cached[1] > now:
        return _EMPTY if cached[2] is None else cached[2]
    order = STRATEGIES[spec.strategy][1]
    field = order.lstrip("-")
    if spec.include_labelled:
        done = Exists(Label.objects.filter(nucleus_id=OuterRef("nucleus_id"), label_set_id=spec.label_set.pk,
                                           author_id=spec.user.pk, source=LabelSource.REVIEW))
    else:
        done = Exists(CurrentLabel.objects.filter(nucleus_id=OuterRef("nucleus_id"), label_set_id=spec.label_set.pk,
                                                  source__in=HUMAN_SOURCES))
    leased, skipped = _touched(spec.label_set.pk)
    rows = (Prediction.objects.filter(model_version_id=spec.version.pk, label_set_id=spec.label_set.pk,
                                      sliver=sliver).filter(~done, ~leased, ~skipped))
    search_at = now + FRONTIER_TTL
    if cached is not None and cached[0] > now:  # move down from where it was
        search_at = cached[0]
        rows = rows.none() if cached[2] is None else rows.filter(**{f"{field}__lte": cached[2]})
    first = rows.order_by(order, "-id").values_list(field, flat=True).first()
    cache_set(key, (search_at, now + FRONTIER_REFRESH, first), timeout=max(1.0, search_at - now))
    return _EMPTY if first is None else first


def touched_and_free(spec: QueueSpec, now, *, with_skips: bool = True) -> set[int]:
    """Touched nuclei of the label set that may be free for this reviewer: no lease running, and not
    skipped by them lately (one statement; whether they got a human label meanwhile the candidate
    query checks)."""
    # Decided rows are reviewed, not touched: without this the list would grow with every decision.
    skip_blocks = "s.user_id = %s AND s.skipped_at > %s" if with_skips else "1 = 0"
    rows = sql.fetch_all(
        f"SELECT r.nucleus_id, CASE WHEN r.expires_at > %s THEN 1 ELSE 0 END FROM {sql.table(ReviewLease)} r "
        f"WHERE r.label_set_id = %s AND NOT r.decided "
        f"UNION ALL SELECT s.nucleus_id, CASE WHEN {skip_blocks} THEN 1 ELSE 0 END FROM {sql.table(ReviewSkip)} s "
        f"WHERE s.label_set_id = %s",
        [_dt(now), spec.label_set.pk, *([spec.user.pk, _dt(now - SKIP_COOLDOWN)] if with_skips else []),
         spec.label_set.pk])
    touched = {nucleus_id for nucleus_id, _ in rows}
    blocked = {nucleus_id for nucleus_id, blocks in rows if blocks}
    return touched - blocked


def prediction_candidates(spec: QueueSpec, now, *, with_skips: bool = True, limit: int = CANDIDATES,
                          skip_locked: bool = True) -> list[int]:
    """The best free nuclei in strategy order, slivers (nuclei cut by the image's edge, or tiny) after
    all the others: an edge fragment's probabilities are uncertain because it is a fragment, so an
    uncertainty order put them first, and a reviewer can rarely tell its class either."""
    found: list[int] = []
    for sliver in (False, True):
        found += _prediction_candidates(spec, now, sliver, with_skips=with_skips, limit=limit - len(found),
                                        skip_locked=skip_locked)
        if len(found) >= limit:
            break
    return found


def _prediction_candidates(spec: QueueSpec, now, sliver: bool, *, with_skips: bool, limit: int,
                           skip_locked: bool) -> list[int]:
    """Among slivers or among the others: first the touched ones above the frontier that are free again
    (released, expired, skipped long enough ago), then a scan down from the frontier."""
    if spec.version is None:
        return []
    field = STRATEGIES[spec.strategy][1].lstrip("-")   # a fixed column name: the ranking, always descending
    free, free_params = free_conditions(spec, "p.nucleus_id", now, with_skips=with_skips)
    lock = sql.lock_clause(of="p", no_key=True, skip_locked=True) if skip_locked else ""

    def scan(extra: str, extra_params: list, n: int) -> list[int]:
        return _ids(f"SELECT p.nucleus_id FROM {sql.table(Prediction)} p WHERE p.model_version_id = %s "
                    f"AND p.label_set_id = %s AND p.sliver = %s AND {free}{extra} "
                    f"ORDER BY p.{field} DESC, p.id DESC LIMIT %s{lock}",
                    [spec.version.pk, spec.label_set.pk, sliver, *free_params, *extra_params, n])

    frontier = queue_frontier(spec, sliver)
    free_again = sorted(touched_and_free(spec, now, with_skips=with_skips))
    found: list[int] = []
    if free_again:
        extra = f" AND p.nucleus_id IN ({', '.join(['%s'] * len(free_again))})"
        extra_params = list(free_again)
        if frontier is not _EMPTY:
            extra += f" AND p.{field} > %s"
            extra_params.append(frontier)
        found = scan(extra, extra_params, limit)
    if len(found) < limit and frontier is not _EMPTY:
        found += scan(f" AND p.{field} <= %s", [frontier], limit - len(found))
    return found


NUCLEUS_BOUNDS_TTL = 600.0


def project_nucleus_bounds(project: Project) -> tuple[int, int] | None:
    """The smallest and largest nucleus id of the project (two ``LIMIT 1`` primary-key scans), kept a while:
    asked for at every random ``next``, they took 110 ms of its 145 on SQLite at 900,000 nuclei. Kept for the
    project's datasets as they are (one aggregate of its few dataset rows), so an import or a deletion is
    never served the range before it."""
    datasets = Dataset.objects.filter(project_id=project.pk).aggregate(n=Count("id"), last=Max("id"),
                                                                       nuclei=Sum("nucleus_count"))
    key = nucleus_bounds_key(project.pk, (datasets["n"], datasets["last"], datasets["nuclei"]))
    cached = cache_get(key)
    if cached is not None:
        return tuple(cached) if cached else None

    def end(direction: str) -> int | None:
        row = sql.fetch_one(f"SELECT n.id FROM {sql.table(Nucleus)} n JOIN {sql.table(Image)} i ON i.id = n.image_id "
                            f"WHERE i.project_id = %s ORDER BY n.id {direction} LIMIT 1", [project.pk])
        return row[0] if row else None

    low = end("ASC")
    bounds = None if low is None else (low, end("DESC"))
    cache_set(key, list(bounds) if bounds else [], NUCLEUS_BOUNDS_TTL)
    return bounds


RANDOM_PROBES = 64   # random ids looked up per round...
RANDOM_ROUNDS = 4    # ...in at most this many rounds before a scan
RANDOM_SCAN = 200    # free nuclei a scan (a nearly finished queue) draws from


def random_candidates(spec: QueueSpec, now, *, with_skips: bool = True, limit: int = CANDIDATES,
                      rng: random.Random | None = None, skip_locked: bool = True) -> list[int]:
    """Free nuclei drawn at random from the whole queue, each as likely as any other.

    Random ids of the project's id range are looked up (each a primary-key probe with the queue's
    anti-joins) and a random sample of the free ones comes back. A scan up from a random pivot, as
    before, was anything but random: labelled nuclei come in long runs of ids (a dataset has ground
    truth in its own label set), so most pivots landed in a run and served the free nuclei just after
    it in id order, one image's nuclei 1, 2, 3... A small project's range is looked up whole. Only when
    the probes find nothing free (a nearly finished queue) is the range scanned from a random pivot,
    and a random few of the first free nuclei returned.
    """
    bounds = project_nucleus_bounds(spec.project)
    if bounds is None:
        return []
    low, high = bounds
    rng = rng or random
    free, free_params = free_conditions(spec, "n.id", now, with_skips=with_skips)
    lock = sql.lock_clause(of="n", no_key=True, skip_locked=True) if skip_locked else ""

    def scan(where: str, where_params: list, n: int) -> list[int]:
        return _ids(f"SELECT n.id FROM {sql.table(Nucleus)} n JOIN {sql.table(Image)} i ON i.id = n.image_id "
                    f"WHERE i.project_id = %s AND {free} AND {where} ORDER BY n.id LIMIT %s{lock}",
                    [spec.project.pk, *free_params, *where_params, n])

    if high - low + 1 <= RANDOM_PROBES * RANDOM_ROUNDS:
        rounds = [("n.id >= %s AND n.id <= %s", [low, high])]
    else:
        rounds = []
        for _ in range(RANDOM_ROUNDS):
            probes = sorted({rng.randint(low, high) for _ in range(RANDOM_PROBES)})
            rounds.append((f"n.id IN ({', '.join(['%s'] * len(probes))})", probes))
    for where, where_params in rounds:
        found = scan(where, where_params, RANDOM_PROBES * RANDOM_ROUNDS)
        if found:
            return _claim_order(rng.sample(found, min(limit, len(found))))
    pivot = rng.randint(low, high)
    found = scan("n.id >= %s", [pivot], RANDOM_SCAN)
    if len(found) < RANDOM_SCAN:  # wrap round
        found += scan("n.id < %s", [pivot], RANDOM_SCAN - len(found))
    return _claim_order(rng.sample(found, min(limit, len(found))))


def _claim_order(nucleus_ids: list[int]) -> list[int]:
    """A random sample in the order claimers try it: one order for every claimer (a multiplicative hash of
    the id), so two claimers never wait on each other's leases in opposite orders (a deadlock, which a
    shuffle caused), yet not the id order (the first tried would be the sample's lowest id)."""
    return sorted(nucleus_ids, key=lambda pk: (pk * 2654435761) % 2**32)


def candidates(spec: QueueSpec, now, *, with_skips: bool = True, skip_locked: bool = True) -> list[int]:
    if spec.uses_predictions:
        return prediction_candidates(spec, now, with_skips=with_skips, skip_locked=skip_locked)
    return random_candidates(spec, now, with_skips=with_skips, skip_locked=skip_locked)


def held_lease(spec: QueueSpec, now) -> ReviewLease | None:
    """The reviewer's own unexpired lease in this label set (the item they were shown last); one on a
    decided nucleus only when asking for second opinions."""
    where, params = ["user_id = %s", "label_set_id = %s", "expires_at > %s"], [spec.user.pk, spec.label_set.pk, _dt(now)]
    if not spec.include_labelled:
        where.append("NOT decided")
    if spec.exclude:
        where.append(f"nucleus_id NOT IN ({', '.join(['%s'] * len(spec.exclude))})")
        params += list(spec.exclude)
    return sql.first(ReviewLease.objects.raw(
        f"SELECT * FROM {sql.table(ReviewLease)} WHERE {' AND '.join(where)} ORDER BY claimed_at DESC, id DESC LIMIT 1",
        params))


PREDICTION_COUNT_TTL = 600.0


def queue_left(spec: QueueSpec) -> int:
    """Nuclei still in the queue (leased and skipped ones included), from index-only counts: the
    nuclei of the queue minus those with a human label in the label set (minus, with
    ``include_labelled``, those the reviewer reviewed). Exact when the active version predicted
    every nucleus of the project, which the prediction job does."""
    if spec.uses_predictions:
        if spec.version is None:
            return 0
        # A version's predictions are written by its prediction jobs (which invalidate the count as they
        # store them: webapp.training.operations.do_store_predictions): count them once in a while.
        key = prediction_count_key(spec.version.pk, spec.label_set.pk)
        total = cache_get(key)
        if total is None:
            total = Prediction.objects.filter(model_version_id=spec.version.pk, label_set_id=spec.label_set.pk).count()
            cache_set(key, total, PREDICTION_COUNT_TTL)
    else:
        total = Dataset.objects.filter(project_id=spec.project.pk).aggregate(n=Sum("nucleus_count"))["n"] or 0
    if spec.include_labelled:
        done = (Label.objects.filter(label_set_id=spec.label_set.pk, author_id=spec.user.pk, source=LabelSource.REVIEW)
                .values("nucleus_id").distinct().count())
    else:
        done = CurrentLabel.objects.filter(label_set_id=spec.label_set.pk, source__in=HUMAN_SOURCES).count()
    return max(0, total - done)


# ------------------------------------------------------------------------------------- label sets

CLASSES_TTL = 60.0


def label_set_classes(label_set: LabelSet) -> list[dict]:
    """``[{"index", "name", "color"}]`` in index order. Classes are written once, with the label set
    (webapp.datasets.importing), and never changed after, so the queue's hot paths keep them a minute;
    a label set being created (no classes yet) is not cached."""
    key = label_set_classes_key(label_set.pk)
    classes = cache_get(key)
    if classes is None:
        classes = [{"index": index, "name": name, "color": color} for index, name, color in
                   LabelClass.objects.filter(label_set_id=label_set.pk).order_by("index")
                   .values_list("index", "name", "color")]
        if classes:
            cache_set(key, classes, CLASSES_TTL)
    return [dict(c) for c in classes]


def class_name_of(classes: list[dict], index: int | None) -> str | None:
    if index is None:
        return None
    for item in classes:
        if item["index"] == index:
            return item["name"]
    return str(index)


# ------------------------------------------------------------------------------------- item payload

def square_around(cx: float, cy: float, side: int, width: int, height: int) -> list[int]:
    """A square of ``side`` pixels centred on ``(cx, cy)``, shifted to stay inside a ``width`` x ``height``
    image (and no larger than it along either axis): [x0, y0, x1, y1], x1 and y1 exclusive."""
    def axis(centre: float, size: int) -> tuple[int, int]:
        extent = min(side, size)
        start = min(max(int(round(centre - extent / 2)), 0), size - extent)
        return start, start + extent

    x0, x1 = axis(cx, width)
    y0, y1 = axis(cy, height)
    return [x0, y0, x1, y1]


def region_around(x0: int, y0: int, x1: int, y1: int, cx: float, cy: float, width: int, height: int) -> list[int]:
    """A square of tissue centred on the nucleus (shifted to stay inside the image): [x0, y0, x1, y1]."""
    side = max(REGION_MIN_SIDE, REGION_FACTOR * max(x1 - x0, y1 - y0))
    return square_around(cx, cy, side, width, height)


def context_around(region: list[int], width: int, height: int) -> list[int]:
    """The zoomed-out neighbourhood: a square ``CONTEXT_FACTOR`` times the close-up's side around the same
    centre, shifted to stay inside the image (the whole image when that is smaller)."""
    x0, y0, x1, y1 = region
    side = min(CONTEXT_MAX_SIDE, CONTEXT_FACTOR * max(x1 - x0, y1 - y0))

    def axis(start: int, end: int, size: int) -> tuple[int, int]:
        extent = min(side, size)
        begin = min(max((start + end - extent) // 2, 0), size - extent)
        return begin, begin + extent

    cx0, cx1 = axis(x0, x1, width)
    cy0, cy1 = axis(y0, y1, height)
    return [cx0, cy0, cx1, cy1]


def region_url(image_id: int, region: list[int], scale: float | None = None) -> str:
    x0, y0, x1, y1 = region
    url = f"{reverse('api-image-region', args=[image_id])}?x0={x0}&y0={y0}&x1={x1}&y1={y1}"
    return url + (f"&scale={scale:g}" if scale else "")


def viewer_url(image: Image, nucleus: Nucleus) -> str:
    """Where the page's "open in the viewer" goes: the tile viewer, or for a slide the slide viewer opened
    at native resolution on the nucleus (the slide around it)."""
    if image.is_slide:
        return f"{reverse('slide-viewer', args=[image.pk])}?x={round(nucleus.centroid_x)}&y={round(nucleus.centroid_y)}"
    return reverse("image-viewer", args=[image.project_id, image.pk])


def prediction_dict(prediction: Prediction | None, classes: list[dict], version: ModelVersion | None) -> dict | None:
    if prediction is None:
        return None
    base, mlp = prediction.base_probs, prediction.mlp_probs
    probs = [round((b + m) / 2, 5) for b, m in zip(base, mlp)] if mlp else list(base)
    base_top = max(range(len(base)), key=base.__getitem__) if base else None
    mlp_top = max(range(len(mlp)), key=mlp.__getitem__) if mlp else None
    return {
        "class_index": prediction.class_index, "class_name": class_name_of(classes, prediction.class_index),
        "probability": prediction.probability, "probs": probs, "base_probs": base, "mlp_probs": mlp,
        "base_class": base_top, "mlp_class": mlp_top,
        "branches_disagree": mlp_top is not None and base_top != mlp_top,
        "least_confidence": prediction.least_confidence, "margin": prediction.margin,
        "entropy": prediction.entropy, "disagreement": prediction.disagreement,
        "model_version": {"id": version.pk, "number": version.number} if version else None,
    }


def current_label_dict(current: CurrentLabel | None, classes: list[dict]) -> dict | None:
    if current is None:
        return None
    label = current.label
    return {"version": label.pk, "class_index": label.class_index,
            "class_name": class_name_of(classes, label.class_index), "source": label.source,
            "author": label.author.get_username() if label.author else None, "created_at": label.created_at}


def current_label(nucleus_id: int, label_set: LabelSet) -> CurrentLabel | None:
    return (CurrentLabel.objects.select_related("label", "label__author")
            .filter(nucleus_id=nucleus_id, label_set_id=label_set.pk).first())


PREDICTION_COLUMNS = ("class_index", "probability", "base_probs", "mlp_probs", "least_confidence", "margin",
                      "entropy", "disagreement")


def item_payload(nucleus: Nucleus, label_set: LabelSet, version: ModelVersion | None, *,
                 classes: list[dict] | None = None, lease: ReviewLease | None = None) -> dict:
    """Everything the review page shows for one nucleus: its tissue region (and a wider one to zoom out
    to), outline, neighbours in their classes, the prediction with both branches, the current label and
    its version, and its labels and predictions in the project's other label sets."""
    classes = classes if classes is not None else label_set_classes(label_set)
    image: Image = nucleus.image
    region = region_around(nucleus.x0, nucleus.y0, nucleus.x1, nucleus.y1, nucleus.centroid_x, nucleus.centroid_y,
                           image.width, image.height)
    rx0, ry0, rx1, ry1 = region
    context = context_around(region, image.width, image.height)
    # One statement: the nucleus and its neighbours in the region, each with its current label and the
    # active version's prediction (in full for the nucleus itself, the class only for the neighbours).
    user_model = get_user_model()
    rows = sql.fetch_all(
        f"SELECT n.id, n.outline, c.class_index, c.source, c.label_id, u.{user_model.USERNAME_FIELD}, l.created_at, "
        + ", ".join(f"p.{column}" for column in PREDICTION_COLUMNS) +
        f" FROM {sql.table(Nucleus)} n "
        f"LEFT JOIN {sql.table(CurrentLabel)} c ON c.nucleus_id = n.id AND c.label_set_id = %s "
        f"LEFT JOIN {sql.table(Label)} l ON l.id = c.label_id "
        f"LEFT JOIN {sql.table(user_model)} u ON u.id = l.author_id "
        f"LEFT JOIN {sql.table(Prediction)} p ON p.nucleus_id = n.id AND p.label_set_id = %s AND p.model_version_id = %s "
        # The lower bound on y0 (the region's top less the tallest nucleus) bounds the scan of the (image, y0,
        # x0) index to a band: a slide's 10^5-10^6 nuclei are never all read for one item.
        f"WHERE n.image_id = %s AND n.y0 >= %s AND n.y0 < %s AND n.x1 > %s AND n.x0 < %s AND n.y1 > %s",
        [label_set.pk, label_set.pk, version.pk if version else None, image.pk,
         ry0 - (tallest_nucleus(image) if image.is_slide else image.height), ry1, rx0, rx1, ry0])
    neighbours, current_dict, prediction = [], None, None
    for pk, outline, cls, source, label_id, author, created, *predicted in rows:
        if pk != nucleus.pk:
            neighbours.append({"id": pk, "outline": sql.json_value(outline), "class_index": cls, "source": source,
                               "predicted_class": predicted[0]})
            continue
        if label_id is not None:
            current_dict = {"version": label_id, "class_index": cls, "class_name": class_name_of(classes, cls),
                            "source": source, "author": author, "created_at": sql.datetime_value(created)}
        if predicted[0] is not None:
            values = dict(zip(PREDICTION_COLUMNS, predicted))
            values["base_probs"], values["mlp_probs"] = sql.json_value(values["base_probs"]), sql.json_value(values["mlp_probs"])
            prediction = Prediction(nucleus_id=pk, label_set_id=label_set.pk, model_version_id=version.pk, **values)
    return {
        "nucleus": {"id": nucleus.pk, "instance_id": nucleus.instance_id,
                    "bbox": [nucleus.x0, nucleus.y0, nucleus.x1, nucleus.y1],
                    "centroid": [round(nucleus.centroid_x, 2), round(nucleus.centroid_y, 2)],
                    "area": nucleus.area, "outline": nucleus.outline,
                    "page_url": reverse("nucleus-detail", args=[image.project_id, nucleus.pk])},
        "image": {"id": image.pk, "name": image.name, "width": image.width, "height": image.height,
                  "dataset": {"id": image.dataset_id, "name": image.dataset.name},
                  "url": reverse("image-file", args=[image.pk, "image"]),
                  "viewer_url": viewer_url(image, nucleus)},
        "region": {"bbox": region, "url": region_url(image.pk, region)},
        "context": {"bbox": context, "url": region_url(image.pk, context)},
        "label_set": {"id": label_set.pk, "name": label_set.name, "classes": classes},
        "other_label_sets": other_label_sets(nucleus.pk, image.project_id, label_set.pk, version),
        "neighbours": neighbours,
        "prediction": prediction_dict(prediction, classes, version),
        "current": current_dict,
        "version": current_dict["version"] if current_dict else None,
        "lease": ({"expires_at": lease.expires_at, "seconds": LEASE_SECONDS} if lease else None),
    }


def other_label_sets(nucleus_id: int, project_id: int, label_set_id: int, version: ModelVersion | None) -> list[dict]:
    """The nucleus in the project's other label sets (its PanNuke ground truth while labelling it in
    CoNSeP): the current label and the active version's predicted class in each. One statement of
    unique-index lookups per label set (a project has a handful), so that the review queue's hottest
    request grows by one cheap statement; class names and colours come from the cached classes (joining
    the class table twice more doubled the statement's planning time, 0.25 -> 0.45 ms)."""
    user_model = get_user_model()
    rows = sql.fetch_all(
        f"SELECT s.id, s.name, s.created_at, c.class_index, c.source, u.{user_model.USERNAME_FIELD}, "
        f"p.class_index, p.probability FROM {sql.table(LabelSet)} s "
        f"LEFT JOIN {sql.table(CurrentLabel)} c ON c.nucleus_id = %s AND c.label_set_id = s.id "
        f"LEFT JOIN {sql.table(Label)} l ON l.id = c.label_id "
        f"LEFT JOIN {sql.table(user_model)} u ON u.id = l.author_id "
        f"LEFT JOIN {sql.table(Prediction)} p ON p.nucleus_id = %s AND p.label_set_id = s.id AND p.model_version_id = %s "
        f"WHERE s.project_id = %s AND s.id <> %s ORDER BY s.name, s.id",
        [nucleus_id, nucleus_id, version.pk if version else None, project_id, label_set_id])
    result = []
    for set_id, set_name, created, cls, source, author, predicted, probability in rows:
        classes = {item["index"]: item for item in label_set_classes(
            sql.partial_instance(LabelSet, id=set_id, name=set_name, created_at=sql.datetime_value(created)))}

        def named(index: int) -> dict:
            item = classes.get(index)
            return {"class_index": index, "class_name": item["name"] if item else str(index),
                    "color": item["color"] if item else None}

        result.append({
            "id": set_id, "name": set_name,
            "current": None if cls is None else {**named(cls), "source": source, "author": author},
            "prediction": None if predicted is None else {**named(predicted), "probability": probability},
        })
    return result


IMAGE_COLUMNS = ("id", "name", "width", "height", "project_id", "dataset_id")


def load_nucleus(nucleus_id: int) -> Nucleus | None:
    """The nucleus, with what the review page shows of its image and dataset, in one plain statement
    (their other fields load when first used)."""
    nucleus = sql.first(Nucleus.objects.raw(
        "SELECT n.*, " + ", ".join(f"i.{column} AS image_{column}" for column in IMAGE_COLUMNS) +
        f", d.name AS dataset_name FROM {sql.table(Nucleus)} n JOIN {sql.table(Image)} i ON i.id = n.image_id "
        f"JOIN {sql.table(Dataset)} d ON d.id = i.dataset_id WHERE n.id = %s", [nucleus_id]))
    if nucleus is not None:
        image = sql.partial_instance(Image, **{column: getattr(nucleus, f"image_{column}") for column in IMAGE_COLUMNS})
        image.dataset = sql.partial_instance(Dataset, id=image.dataset_id, name=nucleus.dataset_name)
        nucleus.image = image
    return nucleus


# ------------------------------------------------------------------------------------- decisions

def undone_label_ids():
    return ReviewUndo.objects.values("label_id")


def restoring_label_ids():
    return ReviewUndo.objects.exclude(restored=None).values("restored_id")


def live_decisions(label_set: LabelSet, user=None):
    """Review labels that are decisions still standing (neither undone nor an undo's restoring row)."""
    rows = Label.objects.filter(label_set_id=label_set.pk, source=LabelSource.REVIEW)
    if user is not None:
        rows = rows.filter(author_id=user.pk)
    return rows.exclude(id__in=undone_label_ids()).exclude(id__in=restoring_label_ids())


def progress(spec: QueueSpec, *, count_left: bool = True) -> dict:
    """Reviewed today (by this reviewer, this label set), left in the queue, and the reviewer's
    agreement with the model: the share of their decisions that equal the prediction they saw."""
    now = timezone.now()
    start_of_day = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    mine = live_decisions(spec.label_set, spec.user)
    with_prediction = mine.exclude(model_version_id=None)
    agreed = with_prediction.filter(Exists(Prediction.objects.filter(
        model_version_id=OuterRef("model_version_id"), label_set_id=OuterRef("label_set_id"),
        nucleus_id=OuterRef("nucleus_id"), class_index=OuterRef("class_index"))))
    compared = with_prediction.count()
    agreed_n = agreed.count() if compared else 0
    return {
        "reviewed_today": mine.filter(created_at__gte=start_of_day).count(),
        "reviewed_total": mine.count(),
        "left": queue_left(spec) if count_left else None,
        "compared_with_model": compared,
        "agreed_with_model": agreed_n,
        "agreement_with_model": round(agreed_n / compared, 4) if compared else None,
    }


# ------------------------------------------------------------------------------------- history

def history(nucleus: Nucleus, label_set: LabelSet | None = None) -> list[dict]:
    """Every label row of a nucleus, oldest first: who, when, source, from what to what, and whether
    it was undone, restores an earlier class after an undo, or settles a reviewer conflict."""
    rows = Label.objects.filter(nucleus=nucleus).select_related("author", "previous", "label_set")
    if label_set is not None:
        rows = rows.filter(label_set=label_set)
    rows = list(rows.order_by("id"))
    ids = [row.pk for row in rows]
    undone = dict(ReviewUndo.objects.filter(label_id__in=ids).values_list("label_id", "created_at"))
    restoring = set(ReviewUndo.objects.filter(restored_id__in=ids).values_list("restored_id", flat=True))
    settling = set(ConflictSettlement.objects.filter(label_id__in=ids).values_list("label_id", flat=True))
    classes_by_set: dict[int, list[dict]] = {}
    result = []
    for row in rows:
        classes = classes_by_set.get(row.label_set_id)
        if classes is None:
            classes = classes_by_set[row.label_set_id] = label_set_classes(row.label_set)
        previous = row.previous
        result.append({
            "id": row.pk, "label_set": row.label_set.name, "class_index": row.class_index,
            "class_name": class_name_of(classes, row.class_index), "source": row.source,
            "author": row.author.get_username() if row.author else None, "created_at": row.created_at,
            "model_version_id": row.model_version_id,
            "previous": ({"id": previous.pk, "class_index": previous.class_index,
                          "class_name": class_name_of(classes, previous.class_index), "source": previous.source}
                         if previous else None),
            "undone": row.pk in undone, "undone_at": undone.get(row.pk),
            "restores": row.pk in restoring, "settles_conflict": row.pk in settling,
        })
    return result
