"""The review API: the queue, decisions (with version check and idempotent replays), undo, skip,
the gallery, progress, reviewer agreement and image crops. Thin views over the operations.

Roles: reading (history, agreement, crops) needs membership; the queue and decisions need the
reviewer role (a viewer gets 403); settling a conflict needs a curator. Outsiders get 404.
"""

from __future__ import annotations

import io
import json
from functools import lru_cache

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, OuterRef
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from PIL import Image as PILImage
from rest_framework import status
from rest_framework.decorators import renderer_classes
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from mlcore.types import quoted

from webapp.core import media
from webapp.core.api_errors import Conflict
from webapp.core.api_views import api_view
from webapp.core.cache import cache_get, cache_set, unreviewed_counts_key
from webapp.core.query_params import yes_no_param
from webapp.core.ids import parse_ids
from webapp.core.pagination import PagePagination, whole_number_param
from webapp.core.policy import project_role
from webapp.datasets.being_deleted import BeingDeleted
from webapp.datasets.models import CurrentLabel, Image, Label, LabelSet, Nucleus
from webapp.datasets.operations import StaleLabel
from webapp.datasets.queries import get_image_for
from webapp.projects.access import get_project_for
from webapp.projects.models import Membership, Project
from webapp.training.models import ModelVersion, Prediction
from webapp.training.queries import active_version

from . import gallery as gallery_query
from . import keys as review_keys
from . import operations, quality, queue
from .access import UnknownName, class_index_for, label_set_and_version, label_set_named, nucleus_for
from .serializers import (BulkDecisionSerializer, DecisionSerializer, LabelSetSerializer, ReleaseSerializer,
                          SettleSerializer, UndoSerializer)

LABEL_SET = OpenApiParameter("label_set", str, description="label set name (default: the project's first)")
STRATEGY = OpenApiParameter("strategy", str, enum=list(queue.STRATEGIES),
                            description="order of the queue (default entropy)")
INCLUDE_LABELLED = OpenApiParameter("include_labelled", bool,
                                    description="also offer nuclei that already have a human label "
                                                "(second opinions; never one you reviewed yourself)")

MAX_GALLERY_PAGE = 1_000_000


def _label_set(project: Project, name: str | None, *, default_first: bool = False) -> LabelSet:
    try:
        return label_set_named(project, name, default_first=default_first)
    except UnknownName as exc:
        raise ValidationError({exc.field: exc.detail}) from None


def _label_set_and_version(project: Project, name: str | None, *, default_first: bool = False):
    try:
        return label_set_and_version(project, name, default_first=default_first)
    except UnknownName as exc:
        raise ValidationError({exc.field: exc.detail}) from None


def _class_index(label_set: LabelSet, data: dict, classes: list[dict] | None = None) -> int:
    try:
        return class_index_for(label_set, data.get("class_name"), data.get("class_index"), classes)
    except UnknownName as exc:
        raise ValidationError({exc.field: exc.detail}) from None


class _SeenVersions:
    """The model version whose prediction a reviewer saw, by the number the client sends (cached per request):
    a decision is scored against what was on screen, not against a version made active since."""

    def __init__(self, project: Project):
        self.project, self.active, self.known = project, active_version(project), {}

    def get(self, number: int | None) -> ModelVersion | None:
        if number is None:
            return self.active
        if number not in self.known:
            self.known[number] = ModelVersion.objects.filter(project=self.project, number=number).first()
        if self.known[number] is None:
            raise UnknownName(f"this project has no model version {number}", field="model_version")
        return self.known[number]


def _spec(request, project: Project, *, with_exclude: bool = True) -> queue.QueueSpec:
    params = request.query_params
    strategy = params.get("strategy") or queue.DEFAULT_STRATEGY
    if strategy not in queue.STRATEGIES:
        raise ValidationError({"strategy": f"must be one of {', '.join(queue.STRATEGIES)}, got {strategy!r}"})
    exclude: tuple[int, ...] = ()
    if with_exclude and params.get("exclude"):
        exclude = parse_ids(params["exclude"], "exclude", limit=200)
    label_set, version = _label_set_and_version(project, params.get("label_set"), default_first=True)
    return queue.QueueSpec(project=project, label_set=label_set, user=request.user, strategy=strategy,
                           include_labelled=yes_no_param(params, "include_labelled"), exclude=exclude, version=version)


def _conflict(exc: StaleLabel, label_set: LabelSet, user) -> Conflict:
    classes = queue.label_set_classes(label_set)
    current = queue.current_label_dict(exc.current and queue.current_label(exc.current.nucleus_id, label_set), classes)
    if current is None:
        detail = "The label changed meanwhile: the nucleus has no label now. Look again and decide."
    elif current["author"] == user.get_username() and current["source"] == "review":
        # Their own decision from a second click, another tab or a retry: not "someone else".
        detail = (f"You decided this nucleus already: it is {quoted(current['class_name'])}. To change it, "
                  f"undo that decision or review with \"Include labelled nuclei\".")
    else:
        detail = (f"Someone else labelled this nucleus meanwhile: it is now {quoted(current['class_name'])} "
                  f"({current['source']}, by {current['author'] or 'nobody'}). Look again and decide.")
    return Conflict(detail, current=current, version=current["version"] if current else None)


def _already_decided(exc: operations.AlreadyDecided, label_set: LabelSet) -> Conflict:
    classes = queue.label_set_classes(label_set)
    current = queue.current_label_dict(exc.current, classes)
    who = f"{current['author'] or 'Someone'} already decided this nucleus: {quoted(current['class_name'])}" if current \
        else "Another reviewer already decided this nucleus"
    detail = (f"{who}. It has left the queue: go on to the next one (to add a second opinion, review with "
              f"\"Include labelled nuclei\").")
    return Conflict(detail, current=current, version=current["version"] if current else None, already_decided=True)


def label_dict(label: Label, classes: list[dict] | None = None) -> dict:
    classes = classes if classes is not None else queue.label_set_classes(label.label_set)
    previous = label.previous
    return {"id": label.pk, "version": label.pk, "nucleus": label.nucleus_id, "label_set": label.label_set.name,
            "class_index": label.class_index, "class_name": queue.class_name_of(classes, label.class_index),
            "source": label.source, "author": label.author.get_username() if label.author else None,
            "created_at": label.created_at, "model_version_id": label.model_version_id,
            "client_id": label.client_id,
            "previous": ({"id": previous.pk, "class_index": previous.class_index,
                          "class_name": queue.class_name_of(classes, previous.class_index)} if previous else None)}


def _prediction_summary(label: Label, predicted: int | None = None) -> dict:
    """The class the label's model version predicted (``predicted``, when the caller knows it; None: looked
    up) and whether the label agrees with it."""
    if label.model_version_id is None:
        return {"predicted_class": None, "agrees_with_prediction": None}
    if predicted is None:
        predicted = (Prediction.objects.filter(model_version_id=label.model_version_id, label_set_id=label.label_set_id,
                                               nucleus_id=label.nucleus_id).values_list("class_index", flat=True).first())
    return {"predicted_class": predicted,
            "agrees_with_prediction": None if predicted is None else predicted == label.class_index}


# ------------------------------------------------------------------------------------- the queue

NEXT_PARAMETERS = [LABEL_SET, STRATEGY, INCLUDE_LABELLED,
                   OpenApiParameter("exclude", str, description="nucleus ids not to hand out (comma separated: "
                                                                "decisions still being saved)")]


@extend_schema(parameters=NEXT_PARAMETERS, responses={200: OpenApiTypes.OBJECT, 204: None})
@api_view(["GET"], query_parameters=NEXT_PARAMETERS)
def next_item(request, project_id: int):
    """The next nucleus to review, leased to you for five minutes; 204 when the queue is empty."""
    project = get_project_for(request.user, project_id, project_role(request))
    spec = _spec(request, project)
    lease = operations.do_claim_next(spec)
    if lease is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    nucleus = queue.load_nucleus(lease.nucleus_id)
    payload = queue.item_payload(nucleus, spec.label_set, spec.version, lease=lease)
    payload["strategy"] = spec.strategy
    payload["include_labelled"] = spec.include_labelled
    return Response(payload)


PROGRESS_PARAMETERS = [LABEL_SET, STRATEGY, INCLUDE_LABELLED]


@extend_schema(parameters=PROGRESS_PARAMETERS, responses=OpenApiTypes.OBJECT)
@api_view(["GET"], query_parameters=PROGRESS_PARAMETERS)
def progress(request, project_id: int):
    """Reviewed today and in all (by you), left in the queue, your agreement with the model."""
    project = get_project_for(request.user, project_id, project_role(request))
    spec = _spec(request, project, with_exclude=False)
    return Response({"label_set": spec.label_set.name, "strategy": spec.strategy, **queue.progress(spec)})


# ------------------------------------------------------------------------------------- decisions

ONLY_LABEL_SET = OpenApiParameter("label_set", str, description="only this label set")


@extend_schema(methods=["GET"], parameters=[ONLY_LABEL_SET], responses=OpenApiTypes.OBJECT)
@extend_schema(methods=["POST"], request=DecisionSerializer,
               responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
@api_view(["GET", "POST"], query_parameters=[ONLY_LABEL_SET])
def nucleus_labels(request, nucleus_id: int):
    """GET: the label history of a nucleus. POST: record your class for it (reviewers).

    ``version`` is the current label id you saw (null for none); 409 with the ``current`` label
    when someone changed it meanwhile. A replayed ``client_id`` answers 200 with the same row.
    """
    if request.method in SAFE_METHODS:
        project, nucleus = nucleus_for(request.user, nucleus_id, project_role(request))
        name = request.query_params.get("label_set")
        label_set = _label_set(project, name) if name else None
        return Response({"nucleus": nucleus.pk, "image": nucleus.image_id,
                         "history": queue.history(nucleus, label_set)})
    project, nucleus = nucleus_for(request.user, nucleus_id, project_role(request))
    body = DecisionSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = body.validated_data
    label_set, _ = _label_set_and_version(project, data["label_set"])
    classes = queue.label_set_classes(label_set)
    class_index = _class_index(label_set, data, classes)
    try:
        seen = _SeenVersions(project).get(data["model_version"])
    except UnknownName as exc:
        raise ValidationError({exc.field: exc.detail}) from None
    try:
        decision = operations.do_decide(nucleus, label_set, class_index, user=request.user,
                                        expected_label_id=data["version"], client_id=data["client_id"],
                                        version=seen, second_opinion=data["second_opinion"],
                                        class_count=len(classes))
    except StaleLabel as exc:
        raise _conflict(exc, label_set, request.user) from None
    except operations.AlreadyDecided as exc:
        raise _already_decided(exc, label_set) from None
    except operations.ClientIdReused as exc:
        raise Conflict(str(exc)) from None
    label = decision.label
    return Response({**label_dict(label, classes), **_prediction_summary(label, decision.predicted_class),
                     "replayed": not decision.created},
                    status=status.HTTP_201_CREATED if decision.created else status.HTTP_200_OK)


def _undo_response(undo, label_set: LabelSet) -> Response:
    classes = queue.label_set_classes(label_set)
    current = queue.current_label_dict(queue.current_label(undo.label.nucleus_id, label_set), classes)
    nucleus = queue.load_nucleus(undo.label.nucleus_id)
    # People know a nucleus by its number in its image (the review page's caption): say that one too.
    return Response({"nucleus": undo.label.nucleus_id, "instance_id": nucleus.instance_id,
                     "image_name": nucleus.image.name, "undone": label_dict(undo.label, classes),
                     "restored": label_dict(undo.restored, classes) if undo.restored else None,
                     "current": current, "version": current["version"] if current else None})


def _reviewed_nucleus(request, nucleus_id: int, serializer_class):
    """The nucleus (for a reviewer of its project), the validated body and its label set."""
    project, nucleus = nucleus_for(request.user, nucleus_id, project_role(request))
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return nucleus, body.validated_data, _label_set(project, body.validated_data["label_set"])


@extend_schema(request=UndoSerializer, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
@api_view(["POST"])
def undo_nucleus(request, nucleus_id: int):
    """Undo your own current decision on this nucleus: a new row restores the previous class."""
    nucleus, data, label_set = _reviewed_nucleus(request, nucleus_id, UndoSerializer)
    try:
        undo = operations.do_undo(nucleus, label_set, user=request.user, client_id=data["client_id"])
    except StaleLabel as exc:
        raise _conflict(exc, label_set, request.user) from None
    except operations.ReviewError as exc:
        raise Conflict(str(exc)) from None
    return _undo_response(undo, label_set)


@extend_schema(request=UndoSerializer, responses={200: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
@api_view(["POST"])
def undo_last(request, project_id: int):
    """Undo your latest decision in a label set (the U key); its nucleus comes back to you next."""
    project = get_project_for(request.user, project_id, project_role(request))
    body = UndoSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    label_set = _label_set(project, body.validated_data["label_set"])
    try:
        undo = operations.do_undo_last(label_set, user=request.user, client_id=body.validated_data["client_id"])
    except StaleLabel as exc:
        conflict = _conflict(exc, label_set, request.user)
        conflict.detail = "Your last decision was changed by someone else since: " + str(conflict.detail)
        raise conflict from None
    except operations.ReviewError as exc:
        raise Conflict(str(exc)) from None
    return _undo_response(undo, label_set)


@extend_schema(request=LabelSetSerializer, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
def skip(request, nucleus_id: int):
    """Put a nucleus aside: your lease ends and the queue does not offer it to you again soon."""
    nucleus, _, label_set = _reviewed_nucleus(request, nucleus_id, LabelSetSerializer)
    operations.do_skip(nucleus, label_set, request.user)
    return Response({"nucleus": nucleus.pk, "skipped": True})


@extend_schema(request=ReleaseSerializer, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
def release(request, nucleus_id: int):
    """Give your lease on a nucleus back without deciding (it returns to the queue at once). With
    ``expires_at``, only the lease the claim answered with: a page left while its reload claims again sends
    this after the reload's claim may have renewed the lease, which then stays."""
    nucleus, data, label_set = _reviewed_nucleus(request, nucleus_id, ReleaseSerializer)
    released = operations.do_release(nucleus, label_set, request.user, expires_at=data.get("expires_at"))
    return Response({"nucleus": nucleus.pk, "released": bool(released)})


# ------------------------------------------------------------------------------------- gallery

GALLERY_COUNTS_TTL = 60.0


def _class_counts(rows, version_id: int, label_set_id: int) -> dict[int, int]:
    """Unreviewed predictions per class: a grouped count over every prediction of the label set, kept
    a minute in the cache (the tabs show it; it is slow-ish at a million nuclei). A decision in the label
    set and stored predictions invalidate it (webapp.review.operations, webapp.training.operations)."""
    key = unreviewed_counts_key(label_set_id)
    cached = cache_get(key)  # {"version": the model version counted, "counts": {class index: n}}
    if cached is not None and cached["version"] == version_id:
        return cached["counts"]
    counts = dict(rows.values("class_index").annotate(n=Count("id")).order_by().values_list("class_index", "n"))
    cache_set(key, {"version": version_id, "counts": counts}, GALLERY_COUNTS_TTL)
    return counts


GALLERY_PARAMETERS = [
    LABEL_SET,
    OpenApiParameter("class_name", str, description="only nuclei predicted as this class (default: every class)"),
    OpenApiParameter("status", str, enum=list(gallery_query.STATUSES),
                     description="unreviewed (default): no human label yet; reviewed: a reviewer's decision stands"),
    OpenApiParameter("reviewer", str, description="only the decisions of this username (implies status=reviewed)"),
    OpenApiParameter("min_confidence", float, description="probability of the predicted class, at least (0-1)"),
    OpenApiParameter("max_confidence", float, description="probability of the predicted class, at most (0-1)"),
    OpenApiParameter("sort", str, enum=list(gallery_query.SORTS),
                     description="confidence (probability of the predicted class), margin (gap between the two "
                                 "most probable classes) or disagreement (between the two branches)"),
    OpenApiParameter("order", str, enum=list(gallery_query.ORDERS),
                     description="default: confidence desc, margin asc (closest calls first), disagreement desc"),
    OpenApiParameter("group", str, enum=[g for g in gallery_query.GROUPS if g],
                     description="image, class or reviewer (reviewed only): the group comes first in the order"),
    OpenApiParameter("page", {"type": "integer", "minimum": 1, "maximum": MAX_GALLERY_PAGE},
                     description="from 1; a page past the last is a 404, as in the API's other lists"),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": 200}, description="1-200, default 48"),
    OpenApiParameter("counts", bool, description="also count the unreviewed nuclei per predicted class "
                                                 "(slower; cached for a minute)"),
]


def _choice(params, name: str, choices, default: str) -> str:
    value = params.get(name)
    if value in (None, ""):
        return default
    if value not in choices:
        shown = ", ".join(c for c in choices if c) or "nothing"
        raise ValidationError({name: f"must be one of {shown}, got {value!r}"})
    return value


def _fraction(params, name: str) -> float | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError({name: f"a number between 0 and 1 (a probability), got {raw!r}"}) from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValidationError({name: f"a number between 0 and 1 (a probability), got {raw!r}"})
    return value


def _gallery_spec(request, project: Project, label_set: LabelSet, version, classes: list[dict]):
    params = request.query_params
    # The API's page rules (webapp.core.pagination): a malformed or out-of-range number is the caller's 400,
    # not quietly another page. The gallery knows no last page (it reads one card past the page instead).
    page = whole_number_param(params, "page", 1, 1, MAX_GALLERY_PAGE)   # the row offset must fit 64-bit integers
    page_size = whole_number_param(params, "page_size", 48, 1, 200)
    sort = _choice(params, "sort", gallery_query.SORTS, gallery_query.DEFAULT_SORT)
    order = _choice(params, "order", gallery_query.ORDERS, gallery_query.SORTS[sort][3])
    group = _choice(params, "group", gallery_query.GROUPS, "")
    reviewer = None
    if params.get("reviewer"):
        user_model = get_user_model()
        reviewer = user_model.objects.filter(**{user_model.USERNAME_FIELD: params["reviewer"]}).first()
        # One answer for no such account and for an account with nothing to do with the project: otherwise
        # the filter would tell any reviewer which usernames exist on the site.
        if reviewer is None or not (
                Membership.objects.filter(project=project, user=reviewer).exists()
                or Label.objects.filter(label_set=label_set, author=reviewer).exists()):
            raise ValidationError({"reviewer": f"no member or reviewer of this project is named "
                                               f"{params['reviewer']!r}"})
    implied = "reviewed" if reviewer is not None or group == "reviewer" else "unreviewed"
    status_ = _choice(params, "status", gallery_query.STATUSES, implied)
    if status_ == "unreviewed" and reviewer is not None:
        raise ValidationError({"reviewer": "unreviewed nuclei have no reviewer: leave status out or use "
                                           "status=reviewed"})
    if status_ == "unreviewed" and group == "reviewer":
        raise ValidationError({"group": "unreviewed nuclei have no reviewer: group=reviewer needs status=reviewed"})
    low, high = _fraction(params, "min_confidence"), _fraction(params, "max_confidence")
    if low is not None and high is not None and low > high:
        raise ValidationError({"min_confidence": f"min_confidence ({low:g}) is above max_confidence ({high:g})"})
    name = params.get("class_name") or None
    class_index = _class_index(label_set, {"class_name": name}, classes) if name else None
    return gallery_query.GallerySpec(
        project=project, label_set=label_set, version=version, user=request.user, status=status_,
        class_index=class_index, min_confidence=low, max_confidence=high, reviewer=reviewer, sort=sort, order=order,
        group=group, page=page, page_size=page_size)


def _group_label(spec, card, details: dict, classes: list[dict]) -> dict | None:
    if not spec.group:
        return None
    if spec.group == "image":
        nucleus = details["nucleus"]
        return {"key": f"image:{nucleus.image_id}", "label": f"{details['dataset']} / {nucleus.image.name}"}
    if spec.group == "class":
        return {"key": f"class:{card.class_index}", "label": queue.class_name_of(classes, card.class_index)}
    return {"key": f"reviewer:{card.group_key or ''}", "label": card.group_key or "(a deleted account)"}


@extend_schema(parameters=GALLERY_PARAMETERS, responses=OpenApiTypes.OBJECT)
@api_view(["GET"], query_parameters=GALLERY_PARAMETERS)
def gallery(request, project_id: int):
    """The film strip: predictions of the active model, filtered, sorted and grouped, a page at a time.

    Each item carries what its card shows (crop, outline, predicted class, confidence, margin,
    disagreement, the current label and who decided it) and ``version``, the current label id to send
    with a decision (``POST review/bulk/``: agree = the predicted class, disagree = another class)."""
    project = get_project_for(request.user, project_id, project_role(request))
    label_set, version = _label_set_and_version(project, request.query_params.get("label_set"), default_first=True)
    classes = queue.label_set_classes(label_set)
    base = {"label_set": {"id": label_set.pk, "name": label_set.name, "classes": classes}, "counts": None,
            "items": [], "has_more": False,
            "model_version": {"id": version.pk, "number": version.number} if version else None}
    if version is None:  # still check the parameters, so that a mistake is not hidden behind "no model"
        version = ModelVersion(pk=0, number=0)
    spec = _gallery_spec(request, project, label_set, version, classes)
    base.update({"class_name": queue.class_name_of(classes, spec.class_index), "status": spec.status,
                 "reviewer": spec.reviewer.get_username() if spec.reviewer else None,
                 "min_confidence": spec.min_confidence, "max_confidence": spec.max_confidence,
                 "sort": spec.sort, "order": spec.order, "group": spec.group or None,
                 "page": spec.page, "page_size": spec.page_size})
    cards, base["has_more"] = gallery_query.page_cards(spec, classes) if base["model_version"] else ([], False)
    if spec.page > 1 and not cards:
        # As the API's other lists answer (webapp.core.pagination): it answered 200 with no cards where they answer
        # 404, so a script walking pages had two ends to look for. The first page of nothing is an empty page.
        raise NotFound(PagePagination.invalid_page_message.format(page_number=spec.page), code="past_the_end")
    if base["model_version"] is None:
        return Response(base)
    if yes_no_param(request.query_params, "counts"):
        unlabelled = ~Exists(CurrentLabel.objects.filter(nucleus_id=OuterRef("nucleus_id"), label_set_id=label_set.pk,
                                                         source__in=queue.HUMAN_SOURCES))
        rows = Prediction.objects.filter(unlabelled, model_version_id=version.pk, label_set_id=label_set.pk)
        counts = _class_counts(rows, version.pk, label_set.pk)
        base["counts"] = {c["name"]: counts.get(c["index"], 0) for c in classes}
    details = gallery_query.card_details(cards, label_set)
    for card in cards:
        found = details.get(card.nucleus_id)
        if found is None:  # deleted meanwhile
            continue
        nucleus, current = found["nucleus"], found["current"]
        image = nucleus.image
        side = max(48, 2 * max(nucleus.x1 - nucleus.x0, nucleus.y1 - nucleus.y0))
        region = queue.square_around(nucleus.centroid_x, nucleus.centroid_y, side, image.width, image.height)
        base["items"].append({
            "nucleus": nucleus.pk, "instance_id": nucleus.instance_id, "image": image.pk, "image_name": image.name,
            "dataset": found["dataset"], "outline": nucleus.outline, "region": region,
            "crop_url": queue.region_url(image.pk, region),
            "page_url": reverse("nucleus-detail", args=[project.pk, nucleus.pk]),
            "class_index": card.class_index, "class_name": queue.class_name_of(classes, card.class_index),
            "probability": card.probability, "margin": 1.0 - card.margin,
            "disagreement": card.disagreement,
            "version": current.label_id if current else None,
            "current": queue.current_label_dict(current, classes),
            "group": _group_label(spec, card, found, classes),
        })
    return Response(base)


@extend_schema(request=BulkDecisionSerializer, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
def bulk(request, project_id: int):
    """Many decisions at once (the gallery's "accept selected"), each recorded on its own like a
    single POST: the answer lists a status per nucleus (201, 200 replay, 409 changed, 400, 404)."""
    project = get_project_for(request.user, project_id, project_role(request))
    body = BulkDecisionSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    label_set = _label_set(project, body.validated_data["label_set"])
    classes = queue.label_set_classes(label_set)
    seen = _SeenVersions(project)
    wanted = [item["nucleus"] for item in body.validated_data["decisions"]]
    nuclei = {n.pk: n for n in Nucleus.objects.filter(pk__in=wanted, image__project=project).select_related("image")}
    results = []
    for item in body.validated_data["decisions"]:
        nucleus = nuclei.get(item["nucleus"])
        if nucleus is None:
            results.append({"nucleus": item["nucleus"], "status": 404, "detail": "no such nucleus in this project"})
            continue
        try:
            class_index = class_index_for(label_set, item.get("class_name"), item.get("class_index"), classes)
            decision = operations.do_decide(nucleus, label_set, class_index, user=request.user,
                                            expected_label_id=item["version"], client_id=item["client_id"],
                                            version=seen.get(item["model_version"]), class_count=len(classes))
            label, created = decision.label, decision.created
        except UnknownName as exc:
            results.append({"nucleus": nucleus.pk, "status": 400, "detail": str(exc)})
        except (StaleLabel, operations.AlreadyDecided) as exc:
            conflict = (_conflict(exc, label_set, request.user) if isinstance(exc, StaleLabel)
                        else _already_decided(exc, label_set))
            results.append({"nucleus": nucleus.pk, "status": 409, "detail": str(conflict.detail), **conflict.extra})
        except operations.ClientIdReused as exc:
            results.append({"nucleus": nucleus.pk, "status": 409, "detail": str(exc)})
        except BeingDeleted as exc:
            results.append({"nucleus": nucleus.pk, "status": 409, "detail": exc.detail, **exc.extra})
        else:
            results.append({"nucleus": nucleus.pk, "status": 201 if created else 200,
                            "label": label_dict(label, classes)})
    return Response({"results": results, "saved": sum(r["status"] in (200, 201) for r in results)})


# ------------------------------------------------------------------------------------- quality control

@extend_schema(parameters=[ONLY_LABEL_SET], responses=OpenApiTypes.OBJECT)
@api_view(["GET"], query_parameters=[ONLY_LABEL_SET])
def agreement(request, project_id: int):
    """Cohen's kappa per pair of reviewers and per class (one vs rest), and the open conflicts."""
    project = get_project_for(request.user, project_id, project_role(request))
    name = request.query_params.get("label_set")
    label_set = _label_set(project, name) if name else None
    return Response({"label_sets": quality.project_agreement(project, label_set)})


@extend_schema(request=SettleSerializer, responses={201: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
@api_view(["POST"])
def settle(request, project_id: int):
    """A curator records the final label of a nucleus on which reviewers disagree."""
    project = get_project_for(request.user, project_id, project_role(request))
    body = SettleSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = body.validated_data
    _, nucleus = nucleus_for(request.user, data["nucleus"], project_role(request), project_id=project.pk)
    label_set = _label_set(project, data["label_set"])
    class_index = _class_index(label_set, data)
    try:
        label = operations.do_settle(nucleus, label_set, class_index, curator=request.user,
                                     expected_label_id=data["version"], client_id=data["client_id"])
    except StaleLabel as exc:
        raise _conflict(exc, label_set, request.user) from None
    except operations.ClientIdReused as exc:
        raise Conflict(str(exc)) from None
    return Response(label_dict(label), status=status.HTTP_201_CREATED)


# ------------------------------------------------------------------------------------- crops

class PngRenderer(BaseRenderer):
    """Lets a client ask for image/png and still get a JSON error when the crop cannot be made."""

    media_type = "image/png"
    format = "png"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"  # an error: say what it really is
        return json.dumps(data).encode()


MAX_CROP_SIDE = 2048


# Kept in this process, not in the cache framework: decoded pixels are megabytes (a Redis round trip of
# them would cost more than decoding), and the key names a local file (its path and mtime) of this host.
@lru_cache(maxsize=4)
def _pixels(full_path: str, mtime_ns: int) -> np.ndarray:
    """The decoded pixels of an image file (a local copy: webapp.core.media.local_path), as
    webapp.datasets.importing.load_rgb decodes them, kept for a few images (crops of one tile come in runs)."""
    with PILImage.open(full_path) as source:
        return np.asarray(source.convert("RGB"))


def _slide_region(image: Image, x0: int, y0: int, x1: int, y1: int, out_w: int, out_h: int) -> np.ndarray:
    """A region of a whole-slide image, read from the pyramid level nearest the asked scale (only the
    region is read: a slide is never decoded whole)."""
    from mlcore.slides import SlideError
    from webapp.datasets.slides import open_image_slide

    try:
        slide = open_image_slide(image)
        return slide.read_scaled(x0, y0, x1 - x0, y1 - y0, (x1 - x0) / out_w)
    except SlideError as exc:
        raise NotFound(str(exc)) from None


def _int_param(params, name: str, default: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(float(raw))
    except (ValueError, OverflowError):  # OverflowError: "inf"
        raise ValidationError({name: f"must be a number, got {raw!r}"}) from None


REGION_PARAMETERS = [*(OpenApiParameter(name, int) for name in ("x0", "y0", "x1", "y1")),
                     OpenApiParameter("scale", float, description="output pixels per image pixel (default 1)")]


@extend_schema(operation_id="image_region_png", tags=["images"], parameters=REGION_PARAMETERS,
               responses={(200, "image/png"): OpenApiTypes.BINARY})
@api_view(["GET"], query_parameters=REGION_PARAMETERS)
@renderer_classes([JSONRenderer, PngRenderer])
def image_region(request, image_id: int):
    """A PNG crop of an image region (members only): x1, y1 exclusive, clipped to the image."""
    _, image = get_image_for(request.user, image_id)
    params = request.query_params
    x0 = max(0, _int_param(params, "x0", 0))
    y0 = max(0, _int_param(params, "y0", 0))
    x1 = min(image.width, _int_param(params, "x1", image.width))
    y1 = min(image.height, _int_param(params, "y1", image.height))
    if x1 <= x0 or y1 <= y0:
        raise ValidationError({"x1": f"the region [{x0}, {y0}, {x1}, {y1}] is empty inside the "
                                     f"{image.width} x {image.height} image"})
    try:
        scale = float(params.get("scale") or 1)
    except ValueError:
        raise ValidationError({"scale": "must be a number"}) from None
    if not 0.05 <= scale <= 8:
        raise ValidationError({"scale": "must be between 0.05 and 8"})
    out_w, out_h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    if max(out_w, out_h) > MAX_CROP_SIDE:
        raise ValidationError({"scale": f"the crop would be {out_w} x {out_h} px; at most {MAX_CROP_SIDE} a side"})
    if image.is_slide:
        crop = PILImage.fromarray(_slide_region(image, x0, y0, x1, y1, out_w, out_h))
    else:
        try:
            path = media.local_path(image.file)
            pixels = _pixels(str(path), path.stat().st_mtime_ns)
        except FileNotFoundError:
            raise NotFound("The file of this image is missing.") from None
        crop = PILImage.fromarray(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
    if (out_w, out_h) != crop.size:
        crop = crop.resize((out_w, out_h), PILImage.Resampling.LANCZOS if scale < 1 else PILImage.Resampling.BICUBIC)
    buffer = io.BytesIO()
    crop.save(buffer, format="PNG", compress_level=1)
    response = HttpResponse(buffer.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"
    return response


# ------------------------------------------------------------------------------------- review keys

def _nested(errors: dict[str, str]) -> dict:
    """{"actions.skip": ...} as the API's other errors nest a field of a field: {"actions": {"skip": ...}}."""
    nested: dict = {}
    for field, message in errors.items():
        *outer, last = field.split(".")
        place = nested
        for part in outer:
            place = place.setdefault(part, {})
        place[last] = message
    return nested


def _keys_payload(user) -> dict:
    chosen = review_keys.keys_for(user)
    return {**chosen, "defaults": review_keys.defaults(),
            "about": {action: about for action, (_, about) in review_keys.ACTIONS.items()}}


@extend_schema(methods=["GET"], responses=OpenApiTypes.OBJECT)
@extend_schema(methods=["PUT", "PATCH"], request=OpenApiTypes.OBJECT,
               responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT})
@api_view(["GET", "PUT", "PATCH"])
def keys(request):
    """Your review keys, used by the review page and the gallery. PUT ``{"classes": ["1", "2", ...],
    "actions": {"accept": "Enter", "skip": "s", "undo": "u", "help": "?"}, "character_keys": true}`` to
    replace them: class keys by position in the label set; a part left out takes its default; ``{}`` restores
    every default. PATCH changes only what it gives (``{"character_keys": false}`` keeps your keys; an action
    it names keeps the others). A key is one visible character or ``Enter``, and each key does one thing: an
    action given a default class key needs ``classes`` too."""
    if request.method in ("PUT", "PATCH"):
        chosen = request.data if request.data != {} else None
        if request.method == "PATCH":
            chosen = review_keys.patched(review_keys.keys_for(request.user), request.data)
        try:
            operations.do_set_review_keys(request.user, chosen)
        except review_keys.InvalidKeys as exc:
            raise ValidationError(_nested(exc.errors)) from None
    return Response(_keys_payload(request.user))
