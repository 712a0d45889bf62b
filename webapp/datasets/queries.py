"""Read-only queries behind the browsing pages, the viewer API and the exports.

Views stay thin: they check access with the ``..._for(user, ...)`` helpers (404 for non-members, like
:func:`webapp.projects.access.get_project_for`) and render what these functions return. Queries that
can touch thousands of rows use ``values_list`` and build plain lists: no per-nucleus queries.

Label sources shown in the viewer and the exports:

- ``current``: the latest label of any source (CurrentLabel);
- ``ground_truth``: the latest Label with source ground_truth;
- ``review``: the current label where its source is review (the latest review);
- ``prediction``: the predictions of the project's active model version, offered only once they exist
  (read through :mod:`webapp.datasets.prediction_source`, which webapp.training fills).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connections
from django.db.models import Count, Q, Sum, TextField
from django.db.models.functions import Cast, Coalesce
from django.http import Http404

from webapp.core.domain_errors import Invalid
from webapp.jobs.models import Job
from webapp.projects.access import get_project_for, visible_projects
from webapp.projects.models import Membership, Project, Role

from . import prediction_source
from .models import CurrentLabel, Dataset, Image, Label, LabelClass, LabelSet, LabelSource, Nucleus

UNLABELLED_COLOR = "#9e9e9e"

SOURCES = {
    "current": "Current label",
    "ground_truth": "Ground truth",
    "review": "Latest review",
    "prediction": "Prediction",
}


# ----------------------------------------------------------------------------------------- access

def get_dataset_for(user, project_id: int, dataset_id: int, role=Role.VIEWER) -> tuple[Project, Dataset]:
    """The project (``user`` with at least ``role`` in it) and its dataset; 404 otherwise."""
    project = get_project_for(user, project_id, role)
    dataset = Dataset.objects.select_related("label_set", "uploaded_by").filter(pk=dataset_id, project=project).first()
    if dataset is None:
        raise Http404("No such dataset in this project.")
    return project, dataset


def get_image_for(user, image_id: int, project_id: int | None = None) -> tuple[Project, Image]:
    """The image and its project if ``user`` is a member; 404 otherwise (and for a wrong project id)."""
    image = Image.objects.select_related("dataset", "dataset__label_set").filter(pk=image_id).first()
    return _project_of(user, image, project_id, "image"), image


def get_dataset_by_id_for(user, dataset_id: int) -> tuple[Project, Dataset]:
    dataset = Dataset.objects.select_related("project", "label_set").filter(pk=dataset_id).first()
    return _project_of(user, dataset, None, "dataset"), dataset


def _project_of(user, obj, project_id: int | None, what: str) -> Project:
    """The project of ``obj`` for a member; one 404 message whether ``obj`` is missing or private."""
    missing = Http404(f"No such {what}, or you are not a member of its project.")
    if obj is None or (project_id is not None and obj.project_id != project_id):
        raise missing
    try:
        return get_project_for(user, obj.project_id, Role.VIEWER)
    except Http404:
        raise missing from None


def get_label_set(project: Project, name: str | None, default: LabelSet | None = None) -> LabelSet | None:
    """A label set of ``project`` by name; ``default`` when no name is given. An unknown name is the
    caller's parameter that is wrong, not the project: :class:`Invalid` on ``label_set`` (400), naming
    the label sets there are, as the review API answers."""
    if not name:
        return default
    label_set = LabelSet.objects.filter(project=project, name=name).first()
    if label_set is None:
        raise Invalid(f"no label set named {name!r} in this project" + label_set_choices(project),
                      field="label_set", code="unknown_name")
    return label_set


def label_set_choices(project: Project) -> str:
    """" (label sets: a, b)", for a sentence refusing a name that is none of them."""
    names = list(LabelSet.objects.filter(project=project).order_by("id").values_list("name", flat=True))
    return f" (label sets: {', '.join(names)})" if names else " (it has no label sets yet)"


# ----------------------------------------------------------------------------------------- label sets

@dataclass
class LabelSetInfo:
    id: int
    name: str
    classes: list[dict] = field(default_factory=list)  # [{"index", "name", "color"}] in index order

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "classes": self.classes}


def label_sets_of(project: Project) -> list[LabelSetInfo]:
    """The project's label sets with their classes, in two queries."""
    infos = {pk: LabelSetInfo(pk, name)
             for pk, name in LabelSet.objects.filter(project=project).order_by("id").values_list("id", "name")}
    for ls_id, index, name, color in (LabelClass.objects.filter(label_set__project=project)
                                      .order_by("label_set_id", "index")
                                      .values_list("label_set_id", "index", "name", "color")):
        infos[ls_id].classes.append({"index": index, "name": name, "color": color})
    return list(infos.values())


def to_ml_label_set(info: LabelSetInfo):
    """The :class:`mlcore.types.LabelSet` of a stored label set (for the mlcore writers)."""
    from mlcore.types import LabelSet as MLLabelSet

    colors = tuple(tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5)) for c in info.classes)
    return MLLabelSet(info.name, tuple(c["name"] for c in info.classes), colors)


# ----------------------------------------------------------------------------------------- predictions

def prediction_labels(project, nucleus_filter: Q, label_set_ids=None,
                      version=None) -> dict[tuple[int, int], tuple[int, float | None]]:
    """``{(nucleus_id, label_set_id): (class_index, probability)}`` from the active model version.

    ``project``: a Project or its id; ``nucleus_filter``: a ``Q`` on Prediction's nucleus (e.g.
    ``Q(nucleus__image_id=5)`` or a ``nucleus_id`` range); ``label_set_ids`` None for all label sets.
    Empty when the project has no active model version (nothing predicted yet). One or two queries.
    """
    version = version or prediction_source.active_version(project)
    if version is None:
        return {}
    rows = prediction_source.rows(nucleus_filter, version.pk)
    if label_set_ids is not None:
        rows = rows.filter(label_set_id__in=list(label_set_ids))
    return {(n, ls): (c, p) for n, ls, c, p in
            rows.values_list("nucleus_id", "label_set_id", "class_index", "probability").order_by()}


def prediction_details(project, nucleus_filter: Q, label_set_ids=None, version=None
                       ) -> dict[tuple[int, int], tuple[int, float, float]]:
    """Like :func:`prediction_labels`, with the branch disagreement:
    ``{(nucleus_id, label_set_id): (class_index, probability, disagreement)}``."""
    version = version or prediction_source.active_version(project)
    if version is None:
        return {}
    rows = prediction_source.rows(nucleus_filter, version.pk)
    if label_set_ids is not None:
        rows = rows.filter(label_set_id__in=list(label_set_ids))
    return {(n, ls): (c, p, d) for n, ls, c, p, d in
            rows.values_list("nucleus_id", "label_set_id", "class_index", "probability", "disagreement").order_by()}


def has_predictions(project) -> bool:
    version = prediction_source.active_version(project)
    return version is not None and prediction_source.rows(Q(), version.pk).exists()


# ----------------------------------------------------------------------------------------- home

def project_summaries(user) -> list[dict]:
    """The user's projects with dataset, image and nucleus counts and the user's role (two queries)."""
    projects = (visible_projects(user)
                .annotate(n_datasets=Count("datasets", distinct=True),
                          n_images=Coalesce(Sum("datasets__image_count"), 0),
                          n_nuclei=Coalesce(Sum("datasets__nucleus_count"), 0))
                .order_by("name", "id"))
    roles = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
    return [{"project": p, "datasets": p.n_datasets, "images": p.n_images, "nuclei": p.n_nuclei,
             "role": roles.get(p.pk, "")} for p in projects]


# ----------------------------------------------------------------------------------------- project page

def class_counts(project: Project, label_sets: list[LabelSetInfo] | None = None) -> list[dict]:
    """Per label set: nuclei per class (current label) and how many of them were reviewed.

    ``[{"label_set": LabelSetInfo, "total": n, "reviewed": n, "bars": [{"name", "color", "count",
    "reviewed", "fraction"}]}]``; ``fraction`` is the count relative to the largest class of that set.
    """
    label_sets = label_sets if label_sets is not None else label_sets_of(project)
    counts: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    rows = (CurrentLabel.objects.filter(label_set__project=project)
            .values_list("label_set_id", "class_index", "source").annotate(n=Count("id")).order_by())
    for ls_id, index, source, n in rows:
        counts[ls_id, index][0] += n
        if source == LabelSource.REVIEW:
            counts[ls_id, index][1] += n
    result = []
    for info in label_sets:
        bars = [{"index": c["index"], "name": c["name"], "color": c["color"],
                 "count": counts[info.id, c["index"]][0], "reviewed": counts[info.id, c["index"]][1]}
                for c in info.classes]
        largest = max((b["count"] for b in bars), default=0) or 1
        for b in bars:
            b["fraction"] = b["count"] / largest
        result.append({"label_set": info, "bars": bars, "total": sum(b["count"] for b in bars),
                       "reviewed": sum(b["reviewed"] for b in bars)})
    return result


def project_datasets(project: Project):
    return project.datasets.select_related("label_set", "uploaded_by").order_by("id")


def recent_jobs(project: Project, limit: int = 10):
    return Job.objects.filter(project=project).select_related("created_by").order_by("-created_at", "-id")[:limit]


# ----------------------------------------------------------------------------------------- dataset page

def dataset_images(dataset: Dataset):
    return Image.objects.filter(dataset=dataset).order_by("name", "id")


def image_label_counts(image_ids: list[int]) -> dict[int, dict[str, int]]:
    """``{image_id: {"labelled": n, "reviewed": n}}`` for a page of images (one grouped query).

    A nucleus counts as labelled when it has a current label in any label set, as reviewed when
    one of its current labels comes from a review.
    """
    result = {pk: {"labelled": 0, "reviewed": 0} for pk in image_ids}
    base = Nucleus.objects.filter(image_id__in=image_ids).order_by()
    labelled = base.filter(current_labels__isnull=False).values("image_id").annotate(
        n=Count("id", distinct=True)).values_list("image_id", "n")
    reviewed = base.filter(current_labels__source=LabelSource.REVIEW).values("image_id").annotate(
        n=Count("id", distinct=True)).values_list("image_id", "n")
    for image_id, n in labelled:
        result[image_id]["labelled"] = n
    for image_id, n in reviewed:
        result[image_id]["reviewed"] = n
    return result


def neighbours(image: Image) -> tuple[int | None, int | None]:
    """The previous and next image of the same dataset (by name), for the viewer's arrows."""
    siblings = Image.objects.filter(dataset_id=image.dataset_id)
    before = siblings.filter(Q(name__lt=image.name) | Q(name=image.name, id__lt=image.pk)).order_by("-name", "-id")
    after = siblings.filter(Q(name__gt=image.name) | Q(name=image.name, id__gt=image.pk)).order_by("name", "id")
    return (before.values_list("id", flat=True).first(), after.values_list("id", flat=True).first())


# ----------------------------------------------------------------------------------------- viewer

def _fetch(queryset) -> list[tuple]:
    """All rows of a ``values_list`` query as plain tuples, straight from the database cursor.

    The SQL is Django's own for the backend in use; skipping the per-row iteration of the ORM matters
    when an image has thousands of nuclei. Only for columns that need no conversion (numbers, text).
    """
    sql, params = queryset.query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


HISTORY_BY_ID_MAX = 1000  # nuclei whose ground-truth history is read by id; beyond, by a subquery


def image_labels(image_id: int, project=None, version=None,
                 nuclei: Q | None = None) -> dict[int, dict[int, list]]:
    """``{nucleus_id: {label_set_id: [class, source, ground_truth, review, predicted, probability]}}``.

    ``class``/``source``: the current label; ``ground_truth``: the latest ground-truth class; ``review``:
    the current class where it comes from a review; ``predicted``/``probability``: the active model
    version's prediction (None when there is none). A handful of queries, whatever the number of nuclei.
    ``project`` (or its id) and ``version`` (see :func:`prediction_source.active_version`) save a query
    each when known.
    ``nuclei``: a ``Q`` on the labels' ``nucleus`` that selects some nuclei of the image (a slide's
    viewport, see :func:`webapp.datasets.slide_queries.nucleus_ids`), else every nucleus of the image.
    """
    labels: dict[int, dict[int, list]] = {}
    only = nuclei if nuclei is not None else Q(nucleus__image_id=image_id)
    current = CurrentLabel.objects.filter(only)
    truth_source, review_source = LabelSource.GROUND_TRUTH.value, LabelSource.REVIEW.value
    changed = set()  # nuclei with a current label that is not ground truth (in any label set)
    for nucleus_id, ls_id, index, source in _fetch(
            current.values_list("nucleus_id", "label_set_id", "class_index", "source").order_by()):
        per = labels.get(nucleus_id)
        if per is None:
            per = labels[nucleus_id] = {}
        if source == truth_source:
            # A current ground-truth label is the latest label, hence the latest ground truth too.
            per[ls_id] = [index, source, index, None, None, None]
        else:
            per[ls_id] = [index, source, None, index if source == review_source else None, None, None]
            changed.add(nucleus_id)
    # Where a review or a pseudo label is current, the ground truth is in the history: read it for those
    # nuclei only (ascending ids, so a later ground truth overwrites an earlier one). By their ids while
    # they are few (an index lookup each); by a subquery when many were reviewed.
    if changed:
        history = Label.objects.filter(source=LabelSource.GROUND_TRUTH)
        if len(changed) <= HISTORY_BY_ID_MAX:
            history = history.filter(nucleus_id__in=sorted(changed))
        else:
            history = history.filter(nucleus_id__in=current.exclude(source=LabelSource.GROUND_TRUTH)
                                     .values("nucleus_id"))
        for nucleus_id, ls_id, index in _fetch(
                history.values_list("nucleus_id", "label_set_id", "class_index").order_by("id")):
            labels.setdefault(nucleus_id, {}).setdefault(ls_id, [None] * 6)[2] = index
    if project is None:
        project = Image.objects.filter(pk=image_id).values_list("project_id", flat=True).first()
    version = version or prediction_source.active_version(project)
    if version is not None:
        for nucleus_id, ls_id, index, probability in _fetch(
                prediction_source.rows(only, version.pk)
                .values_list("nucleus_id", "label_set_id", "class_index", "probability").order_by()):
            per = labels.get(nucleus_id)
            if per is None:
                per = labels[nucleus_id] = {}
            entry = per.get(ls_id)
            if entry is None:
                per[ls_id] = [None, None, None, None, index, probability]
            else:
                entry[4], entry[5] = index, probability
    return labels


_NULL = {None: "null"}  # f"{_NULL.get(v, v)}": JSON for an int or None, without a function call
_SOURCE_JSON = {None: "null", **{value: json.dumps(value) for value in LabelSource.values}}


class _LabelsJson:
    """The ``labels`` object of each nucleus as JSON text, and the per-source counts.

    Most entries repeat (a class from one source, in one label set): their text is made once and reused;
    only a prediction's probability differs from nucleus to nucleus.
    """

    def __init__(self):
        self.counts = dict.fromkeys(SOURCES, 0)
        self._entries: dict[tuple, str] = {}

    def _entry(self, key: tuple) -> str:
        ls_id, index, source, truth, review = key
        null = _NULL
        text = self._entries[key] = (
            f'"{ls_id}":{{"class":{null.get(index, index)},"source":{_SOURCE_JSON[source]},'
            f'"ground_truth":{null.get(truth, truth)},"review":{null.get(review, review)}')
        return text

    def __call__(self, per_set: dict[int, list]) -> str:
        entries, make = self._entries, self._entry
        fragments = []
        for ls_id, (index, source, truth, review, predicted, probability) in (
                sorted(per_set.items()) if len(per_set) > 1 else per_set.items()):
            key = (ls_id, index, source, truth, review)
            text = entries.get(key) or make(key)
            if predicted is not None:
                text += f',"prediction":{{"class":{predicted},"probability":{probability:.4g}}}}}'
            else:
                text += "}"
            fragments.append(text)
        return "{" + ",".join(fragments) + "}"

    def count(self, labels: dict[int, dict[int, list]]) -> dict[str, int]:
        counts = self.counts
        for per_set in labels.values():
            for index, _, truth, review, predicted, _ in per_set.values():
                counts["current"] += index is not None
                counts["ground_truth"] += truth is not None
                counts["review"] += review is not None
                counts["prediction"] += predicted is not None
        return counts


def image_nuclei_json(project: Project, image: Image, image_url: str = "") -> str:
    """Everything the viewer draws, in one JSON document: the image, label sets, sources, every nucleus.

    ``nuclei[]``: ``id``, ``instance_id``, ``bbox`` [x0, y0, x1, y1] (x1, y1 exclusive), ``centroid``
    [x, y], ``area``, ``outline`` [[x, y], ...] (pixel-centre coordinates) and ``labels``:
    ``{label_set_id: {"class": current class index, "source": its source, "ground_truth": index,
    "review": index of the current review or null, "prediction": {"class", "probability"} once predicted}}``.
    Predictions are those of the project's active ``model_version``; the ``prediction`` source is listed
    only when there are some.

    Built as text for speed (an image can have thousands of nuclei): rows come straight from the
    cursor, and the stored outlines are read as JSON text and copied, never decoded and encoded again.
    """
    label_sets = label_sets_of(project)
    version = prediction_source.active_version(project)
    labels = image_labels(image.pk, project, version)
    labels_json = _LabelsJson()
    counts = labels_json.count(labels)
    encode = json.JSONEncoder(separators=(",", ":")).encode
    rows = _fetch(Nucleus.objects.filter(image_id=image.pk).order_by("instance_id")
                  .annotate(outline_text=Cast("outline", TextField()))
                  .values_list("id", "instance_id", "x0", "y0", "x1", "y1", "centroid_x", "centroid_y", "area",
                               "outline_text"))
    get = labels.get
    parts = [f'{{"id":{pk},"instance_id":{instance_id},"bbox":[{x0},{y0},{x1},{y1}],'
             f'"centroid":[{cx:.2f},{cy:.2f}],"area":{area},"outline":{outline or "[]"},'
             f'"labels":{labels_json(per_set) if (per_set := get(pk)) else "{}"}}}'
             for pk, instance_id, x0, y0, x1, y1, cx, cy, area, outline in rows]
    default = image.dataset.label_set_id or (label_sets[0].id if label_sets else None)
    head = encode({
        "image": {"id": image.pk, "name": image.name, "width": image.width, "height": image.height,
                  "dataset": {"id": image.dataset_id, "name": image.dataset.name}, "url": image_url},
        "label_sets": [info.as_dict() for info in label_sets],
        "default_label_set": default,
        "sources": [{"key": key, "name": source_name(key, version), "labels": counts[key]}
                    for key in SOURCES if key != "prediction" or counts[key]],
        "model_version": {"id": version.pk, "number": version.number} if version else None,
        "unlabelled_color": UNLABELLED_COLOR,
    })
    return f'{head[:-1]},"nuclei":[{",".join(parts)}]}}'


def available_sources(project: Project) -> list[tuple[str, str]]:
    """The label sources the viewer offers for a project: prediction only once predictions exist."""
    keys = ["current", "ground_truth", "review"]
    if has_predictions(project):
        keys.append("prediction")
    version = prediction_source.active_version(project) if "prediction" in keys else None
    return [(key, source_name(key, version)) for key in keys]


def source_name(key: str, version=None) -> str:
    if key == "prediction" and version:
        return f"Prediction (model v{version.number})"
    return SOURCES[key]


def class_indices(image_id: int, label_set_id: int, source: str = "current") -> dict[int, int]:
    """``{instance_id: class index}`` of an image's nuclei in one label set, from one source."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "prediction":
        ids = dict(Nucleus.objects.filter(image_id=image_id).values_list("id", "instance_id"))
        project_id = Image.objects.filter(pk=image_id).values_list("project_id", flat=True).first()
        return {ids[n]: index for (n, _), (index, _) in
                prediction_labels(project_id, Q(nucleus__image_id=image_id), [label_set_id]).items()}
    if source == "ground_truth":
        rows = (Label.objects.filter(nucleus__image_id=image_id, label_set_id=label_set_id,
                                     source=LabelSource.GROUND_TRUTH)
                .order_by("id").values_list("nucleus__instance_id", "class_index"))
        return dict(rows)  # later rows overwrite earlier ones: the latest ground truth wins
    rows = CurrentLabel.objects.filter(nucleus__image_id=image_id, label_set_id=label_set_id)
    if source == "review":
        rows = rows.filter(source=LabelSource.REVIEW)
    return dict(rows.values_list("nucleus__instance_id", "class_index"))
