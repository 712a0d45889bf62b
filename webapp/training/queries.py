"""Read-only queries of model versions and their predictions (also what webapp.datasets shows of them:
registered as its prediction source in TrainingConfig.ready)."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.http import Http404

from mlcore.types import quoted

from .models import ModelVersion, Prediction


def active_version(project) -> ModelVersion | None:
    """The project's active :class:`~webapp.training.models.ModelVersion`, or None (its predictions are
    the ones shown, and the next training starts from it). ``project``: a Project or its id."""
    return ModelVersion.objects.filter(project=project, is_active=True).first()


def prediction_rows(nucleus_filter: Q, version_id: int) -> QuerySet:
    """The predictions of the model version ``version_id`` for the nuclei ``nucleus_filter`` selects (a ``Q``
    on Prediction's nucleus, e.g. ``Q(nucleus__image_id=5)``)."""
    return Prediction.objects.filter(nucleus_filter, model_version_id=version_id)


def version_of(project, number: int, queryset=None) -> ModelVersion:
    """Version ``number`` of the project, or a 404 that says which versions there are."""
    version = (queryset if queryset is not None else ModelVersion.objects).filter(project=project,
                                                                                number=number).first()
    if version is None:
        numbers = list(ModelVersion.objects.filter(project=project).order_by("number").values_list("number", flat=True))
        raise Http404(f"project {quoted(project.name)} has no model version {number}"
                      + (f"; its versions are {', '.join(f'v{n}' for n in numbers)}" if numbers else
                         ": no model has been trained yet"))
    return version
