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
- ``random``: a random pivot in the project's nucleus id range, then the primary key upwards
  (wrapping round once).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.db.models import Exists, OuterRef, Sum, Value
from django.urls import reverse
from django.utils import timezone

from webapp.datasets.models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, LabelSource, Nucleus
from webapp.projects.models import Project
from webapp.training.models import ModelVersion, Prediction

from .models import ConflictSettlement, ReviewLease, ReviewSkip, ReviewUndo

LEASE_SECONDS = 300                     # an abandoned item comes back after five minutes
SKIP_COOLDOWN = timedelta(hours=1)      # a skipped item is not offered to the same reviewer for an hour
HUMAN_SOURCES = (LabelSource.GROUND_TRUTH, LabelSource.REVIEW)
CANDIDATES = 8                          # rows fetched per claim attempt (the first free one wins)
REGION_MIN_SIDE = 96                    # px of tissue shown around a nucleus, at least...
REGION_FACTOR = 4                       # ...and four times its larger side

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

    @property
    def uses_predictions(self) -> bool:
        return self.strategy != "random"


# ------------------------------------------------------------------------------------- candidates

def _anti_joins(spec: QueueSpec, ref: str, now, *, with_skips: bool = True, with_leases: bool = True) -> list:
    """``NOT EXISTS`` conditions, each a unique-index lookup per candidate row."""
    conditions = []
    if spec.include_labelled:
        # Offer labelled nuclei too (second opinions), but never one this reviewer already reviewed.
        conditions.append(~Exists(Label.objects.filter(nucleus_id=OuterRef(ref), label_set_id=spec.label_set.pk,
                                                        author_id=spec.user.pk, source=LabelSource.REVIEW)))
    else:
        conditions.append(~Exists(CurrentLabel.objects.filter(nucleus_id=OuterRef(ref), label_set_id=spec.label_set.pk,
                                                              source__in=HUMAN_SOURCES)))
    if with_leases:
        conditions.append(~Exists(ReviewLease.objects.filter(nucleus_id=OuterRef(ref), label_set_id=spec.label_set.pk,
                                                             expires_at__gt=now)))
    if with_skips:
        conditions.append(~Exists(ReviewSkip.objects.filter(nucleus_id=OuterRef(ref), label_set_id=spec.label_set.pk,
                                                            user_id=spec.user.pk, skipped_at__gt=now - SKIP_COOLDOWN)))
    return conditions


def _lock(queryset, skip_locked: bool = True):
    """``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL: concurrent claimers pass over each other's
    candidates instead of queueing behind them (SQLite serialises writers anyway). With
    ``skip_locked=False`` a plain query: every free row, those other claimers are looking at included."""
    if skip_locked and connection.features.has_select_for_update_skip_locked:
        kwargs = {"skip_locked": True, "of": ("self",)}
        if connection.vendor == "postgresql":
            kwargs["no_key"] = True   # does not block inserts of labels that reference the row
        return queryset.select_for_update(**kwargs)
    return queryset


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
# The frontier is a hint kept in this process: moved down every FRONTIER_REFRESH seconds (a short
# walk over what was reviewed meanwhile) and searched again from the top every FRONTIER_TTL
# seconds. A nucleus that loses its human label is found at once all the same: only an undo does
# that, and an undo leases the nucleus back to its reviewer (touched). Reviewers who ask for
# labelled nuclei too ("still to review" = "not reviewed by me") have a frontier of their own.
FRONTIER_TTL = 300.0
FRONTIER_REFRESH = 10.0
_EMPTY = object()
_frontiers: dict[tuple, tuple[float, float, object]] = {}   # key -> (search from the top at, refresh at, score)


def _frontier_key(spec: QueueSpec) -> tuple:
    return (connection.settings_dict.get("NAME"), spec.version.pk, str(getattr(spec.version, "created_at", "")),
            spec.label_set.pk, spec.strategy, spec.user.pk if spec.include_labelled else None)


def _touched(label_set_id: int, ref: str = "nucleus_id") -> list:
    return [Exists(ReviewLease.objects.filter(nucleus_id=OuterRef(ref), label_set_id=label_set_id, decided=False)),
            Exists(ReviewSkip.objects.filter(nucleus_id=OuterRef(ref), label_set_id=label_set_id))]


def queue_frontier(spec: QueueSpec):
    """The score of the first prediction (in queue order) still to review and untouched by the queue;
    ``_EMPTY`` when there is none."""
    key = _frontier_key(spec)
    now = time.monotonic()
    cached = _frontiers.get(key)
    if cached is not None and cached[1] > now:
        return cached[2]
    order = STRATEGIES[spec.strategy][1]
    field = order.lstrip("-")
    if spec.include_labelled:
        done = Exists(Label.objects.filter(nucleus_id=OuterRef("nucleus_id"), label_set_id=spec.label_set.pk,
                                           author_id=spec.user.pk, source=LabelSource.REVIEW))
    else:
        done = Exists(CurrentLabel.objects.filter(nucleus_id=OuterRef("nucleus_id"), label_set_id=spec.label_set.pk,
                                                  source__in=HUMAN_SOURCES))
    leased, skipped = _touched(spec.label_set.pk)
    rows = (Prediction.objects.filter(model_version_id=spec.version.pk, label_set_id=spec.label_set.pk)
            .filter(~done, ~leased, ~skipped))
    search_at = now + FRONTIER_TTL
    if cached is not None and cached[0] > now:  # move down from where it was
        search_at = cached[0]
        rows = rows.none() if cached[2] is _EMPTY else rows.filter(**{f"{field}__lte": cached[2]})
    first = rows.order_by(order, "-id").values_list(field, flat=True).first()
    value = _EMPTY if first is None else first
    if len(_frontiers) > 1000:
        _frontiers.clear()
    _frontiers[key] = (search_at, now + FRONTIER_REFRESH, value)
    return value


def forget_frontiers(label_set_id: int) -> None:
    """A nucleus of this label set lost its human label (an undo): search from the top again."""
    for key in [k for k in _frontiers if k[3] == label_set_id]:
        _frontiers.pop(key, None)


def touched_and_free(spec: QueueSpec, now, *, with_skips: bool = True) -> set[int]:
    """Touched nuclei of the label set that may be free for this reviewer: no lease running, and not
    skipped by them lately (one query; whether they got a human label meanwhile the candidate query
    checks)."""
    # Decided rows are reviewed, not touched: without this the list would grow with every decision.
    leases = (ReviewLease.objects.filter(label_set_id=spec.label_set.pk, decided=False)
              .annotate(kind=Value("lease")).values_list("nucleus_id", "user_id", "expires_at", "kind"))
    skips = (ReviewSkip.objects.filter(label_set_id=spec.label_set.pk)
             .annotate(kind=Value("skip")).values_list("nucleus_id", "user_id", "skipped_at", "kind"))
    touched: set[int] = set()
    blocked: set[int] = set()
    recent = now - SKIP_COOLDOWN
    for nucleus_id, user_id, when, kind in leases.union(skips, all=True):
        touched.add(nucleus_id)
        if kind == "lease" and when > now:
            blocked.add(nucleus_id)
        elif kind == "skip" and with_skips and user_id == spec.user.pk and when > recent:
            blocked.add(nucleus_id)
    return touched - blocked


def prediction_candidates(spec: QueueSpec, now, *, with_skips: bool = True, limit: int = CANDIDATES,
                          skip_locked: bool = True) -> list[int]:
    """The best free nuclei in strategy order: first the touched ones above the frontier that are
    free again (released, expired, skipped long enough ago), then a scan down from the frontier."""
    if spec.version is None:
        return []
    order = STRATEGIES[spec.strategy][1]   # always descending: "-score"
    field = order.lstrip("-")
    rows = (Prediction.objects.filter(model_version_id=spec.version.pk, label_set_id=spec.label_set.pk)
            .filter(*_anti_joins(spec, "nucleus_id", now, with_skips=with_skips)))
    if spec.exclude:
        rows = rows.exclude(nucleus_id__in=spec.exclude)
    frontier = queue_frontier(spec)
    free_again = touched_and_free(spec, now, with_skips=with_skips)
    found: list[int] = []
    if free_again:
        above = rows.filter(nucleus_id__in=sorted(free_again))
        if frontier is not _EMPTY:
            above = above.filter(**{f"{field}__gt": frontier})
        found = list(_lock(above.order_by(order, "-id"), skip_locked).values_list("nucleus_id", flat=True)[:limit])
    if len(found) < limit and frontier is not _EMPTY:
        below = rows.filter(**{f"{field}__lte": frontier}).order_by(order, "-id")
        found += list(_lock(below, skip_locked).values_list("nucleus_id", flat=True)[:limit - len(found)])
    return found


def project_nucleus_bounds(project: Project) -> tuple[int, int] | None:
    """The smallest and largest nucleus id of the project (two ``LIMIT 1`` primary-key scans)."""
    nuclei = Nucleus.objects.filter(image__project_id=project.pk)
    low = nuclei.order_by("id").values_list("id", flat=True).first()
    if low is None:
        return None
    return low, nuclei.order_by("-id").values_list("id", flat=True).first()


RANDOM_WINDOWS = 12  # random id windows tried before a full scan


def random_candidates(spec: QueueSpec, now, *, with_skips: bool = True, limit: int = CANDIDATES,
                      rng: random.Random | None = None, skip_locked: bool = True) -> list[int]:
    """Free nuclei after a random pivot, looked for in a few bounded windows of ids.

    Labelled nuclei come in long runs of ids (a whole dataset has ground truth in its own label
    set), so an unbounded scan from the pivot could walk through hundreds of thousands of labelled
    rows; a window of ids bounds each attempt. Only when every window comes back empty (the queue
    is nearly done) is the whole range scanned.
    """
    bounds = project_nucleus_bounds(spec.project)
    if bounds is None:
        return []
    low, high = bounds
    rng = rng or random
    rows = Nucleus.objects.filter(image__project_id=spec.project.pk).filter(
        *_anti_joins(spec, "id", now, with_skips=with_skips))
    if spec.exclude:
        rows = rows.exclude(id__in=spec.exclude)
    window = max(1000, (high - low + 1) // 1000)
    if high - low + 1 > 2 * window:
        for _ in range(RANDOM_WINDOWS):
            start = rng.randint(low, high)
            found = list(_lock(rows.filter(id__gte=start, id__lt=start + window).order_by("id"), skip_locked)
                         .values_list("id", flat=True)[:limit])
            if found:
                return found
    pivot = rng.randint(low, high)
    found = list(_lock(rows.filter(id__gte=pivot).order_by("id"), skip_locked).values_list("id", flat=True)[:limit])
    if len(found) < limit:  # wrap round
        found += list(_lock(rows.filter(id__lt=pivot).order_by("id"), skip_locked).values_list("id", flat=True)[:limit - len(found)])
    return found


def candidates(spec: QueueSpec, now, *, with_skips: bool = True, skip_locked: bool = True) -> list[int]:
    if spec.uses_predictions:
        return prediction_candidates(spec, now, with_skips=with_skips, skip_locked=skip_locked)
    return random_candidates(spec, now, with_skips=with_skips, skip_locked=skip_locked)


def held_lease(spec: QueueSpec, now) -> ReviewLease | None:
    """The reviewer's own unexpired lease in this label set (the item they were shown last); one on a
    decided nucleus only when asking for second opinions."""
    leases = ReviewLease.objects.filter(user_id=spec.user.pk, label_set_id=spec.label_set.pk, expires_at__gt=now)
    if not spec.include_labelled:
        leases = leases.filter(decided=False)
    if spec.exclude:
        leases = leases.exclude(nucleus_id__in=spec.exclude)
    return leases.order_by("-claimed_at", "-id").first()


_totals: dict[tuple, tuple[float, int]] = {}


def queue_left(spec: QueueSpec) -> int:
    """Nuclei still in the queue (leased and skipped ones included), from index-only counts: the
    nuclei of the queue minus those with a human label in the label set (minus, with
    ``include_labelled``, those the reviewer reviewed). Exact when the active version predicted
    every nucleus of the project, which the prediction job does."""
    if spec.uses_predictions:
        if spec.version is None:
            return 0
        key = ("predictions", connection.settings_dict.get("NAME"), spec.version.pk,
               str(getattr(spec.version, "created_at", "")), spec.label_set.pk)
        cached = _totals.get(key)
        if cached is not None and cached[0] > time.monotonic():
            total = cached[1]
        else:  # a version's predictions are written once: count them once in a while
            total = Prediction.objects.filter(model_version_id=spec.version.pk, label_set_id=spec.label_set.pk).count()
            if len(_totals) > 200:
                _totals.clear()
            _totals[key] = (time.monotonic() + 600.0, total)
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
_classes: dict[tuple, tuple[float, list[dict]]] = {}


def label_set_classes(label_set: LabelSet) -> list[dict]:
    """``[{"index", "name", "color"}]`` in index order. Classes are written once, when the label set
    is created, so the queue's hot paths keep them a minute in this process."""
    key = (connection.settings_dict.get("NAME"), label_set.pk, str(getattr(label_set, "created_at", None) or ""))
    cached = _classes.get(key) if key[2] else None
    if cached is not None and cached[0] > time.monotonic():
        return [dict(c) for c in cached[1]]
    classes = [{"index": index, "name": name, "color": color} for index, name, color in
               LabelClass.objects.filter(label_set_id=label_set.pk).order_by("index")
               .values_list("index", "name", "color")]
    if key[2] and classes:
        if len(_classes) > 500:
            _classes.clear()
        _classes[key] = (time.monotonic() + CLASSES_TTL, classes)
    return [dict(c) for c in classes]


def class_name_of(classes: list[dict], index: int | None) -> str | None:
    if index is None:
        return None
    for item in classes:
        if item["index"] == index:
            return item["name"]
    return str(index)


# ------------------------------------------------------------------------------------- item payload

def region_around(x0: int, y0: int, x1: int, y1: int, cx: float, cy: float, width: int, height: int) -> list[int]:
    """A square of tissue centred on the nucleus (shifted to stay inside the image): [x0, y0, x1, y1]."""
    side = max(REGION_MIN_SIDE, REGION_FACTOR * max(x1 - x0, y1 - y0))

    def axis(centre: float, size: int) -> tuple[int, int]:
        extent = min(side, size)
        start = min(max(int(round(centre - extent / 2)), 0), size - extent)
        return start, start + extent

    rx0, rx1 = axis(cx, width)
    ry0, ry1 = axis(cy, height)
    return [rx0, ry0, rx1, ry1]


def region_url(image_id: int, region: list[int], scale: float | None = None) -> str:
    x0, y0, x1, y1 = region
    url = f"{reverse('api-image-region', args=[image_id])}?x0={x0}&y0={y0}&x1={x1}&y1={y1}"
    return url + (f"&scale={scale:g}" if scale else "")


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


def item_payload(nucleus: Nucleus, label_set: LabelSet, version: ModelVersion | None, *,
                 classes: list[dict] | None = None, lease: ReviewLease | None = None) -> dict:
    """Everything the review page shows for one nucleus: its tissue region, outline, neighbours in
    their classes, the prediction with both branches, the current label and its version."""
    classes = classes if classes is not None else label_set_classes(label_set)
    image: Image = nucleus.image
    region = region_around(nucleus.x0, nucleus.y0, nucleus.x1, nucleus.y1, nucleus.centroid_x, nucleus.centroid_y,
                           image.width, image.height)
    rx0, ry0, rx1, ry1 = region
    neighbour_rows = list(Nucleus.objects.filter(image_id=image.pk, x1__gt=rx0, x0__lt=rx1, y1__gt=ry0, y0__lt=ry1)
                          .exclude(pk=nucleus.pk).order_by().values_list("id", "outline"))
    ids = [pk for pk, _ in neighbour_rows] + [nucleus.pk]
    # One query for the current labels of the nucleus and its neighbours, one for their predictions.
    currents = {row[0]: row for row in CurrentLabel.objects.filter(nucleus_id__in=ids, label_set_id=label_set.pk)
                .values_list("nucleus_id", "class_index", "source", "label_id", "label__author__username",
                             "label__created_at")}
    predictions = {}
    if version is not None:
        predictions = {p.nucleus_id: p for p in Prediction.objects.filter(
            model_version_id=version.pk, label_set_id=label_set.pk, nucleus_id__in=ids)}
    current_dict = None
    if nucleus.pk in currents:
        _, cls, source, label_id, author, created = currents[nucleus.pk]
        current_dict = {"version": label_id, "class_index": cls, "class_name": class_name_of(classes, cls),
                        "source": source, "author": author, "created_at": created}
    neighbours = []
    for pk, outline in neighbour_rows:
        row = currents.get(pk)
        predicted = predictions.get(pk)
        neighbours.append({"id": pk, "outline": outline, "class_index": row[1] if row else None,
                           "source": row[2] if row else None,
                           "predicted_class": predicted.class_index if predicted else None})
    prediction = predictions.get(nucleus.pk)
    return {
        "nucleus": {"id": nucleus.pk, "instance_id": nucleus.instance_id,
                    "bbox": [nucleus.x0, nucleus.y0, nucleus.x1, nucleus.y1],
                    "centroid": [round(nucleus.centroid_x, 2), round(nucleus.centroid_y, 2)],
                    "area": nucleus.area, "outline": nucleus.outline,
                    "page_url": reverse("nucleus-detail", args=[image.project_id, nucleus.pk])},
        "image": {"id": image.pk, "name": image.name, "width": image.width, "height": image.height,
                  "dataset": {"id": image.dataset_id, "name": image.dataset.name},
                  "url": reverse("image-file", args=[image.pk, "image"]),
                  "viewer_url": reverse("image-viewer", args=[image.project_id, image.pk])},
        "region": {"bbox": region, "url": region_url(image.pk, region)},
        "label_set": {"id": label_set.pk, "name": label_set.name, "classes": classes},
        "neighbours": neighbours,
        "prediction": prediction_dict(prediction, classes, version),
        "current": current_dict,
        "version": current_dict["version"] if current_dict else None,
        "lease": ({"expires_at": lease.expires_at, "seconds": LEASE_SECONDS} if lease else None),
    }


def load_nucleus(nucleus_id: int) -> Nucleus | None:
    return Nucleus.objects.select_related("image", "image__dataset").filter(pk=nucleus_id).first()


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
