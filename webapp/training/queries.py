"""Read-only queries of model versions and their predictions (also what webapp.datasets shows of them:
registered as its prediction source in TrainingConfig.ready)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import ModelVersion, Prediction


def active_version(project) -> ModelVersion | None:
    """The project's active :class:`~webapp.training.models.ModelVersion`, or None (its predictions are
    the ones shown, and the next training starts from it). ``project``: a Project or its id."""
    return ModelVersion.objects.filter(project=project, is_active=True).first()


def prediction_rows(nucleus_filter: Q, version_id: int) -> QuerySet:
    """The predictions of the model version ``version_id`` for the nuclei ``nucleus_filter`` selects (a ``Q``
    on Prediction's nucleus, e.g. ``Q(nucleus__image_id=5)``)."""
    return Prediction.objects.filter(nucleus_filter, model_version_id=version_id)
