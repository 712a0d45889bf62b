"""Where the predictions shown beside a dataset's labels (the viewer, the exports) come from: the project's
active model version. webapp.training makes them and sits above this app, so it registers here how to read
them (TrainingConfig.ready); with nothing registered, nothing is predicted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet


@dataclass(frozen=True)
class PredictionSource:
    # A Project or its id -> its active model version (``pk``, ``number``), or None.
    active_version: Callable[[Any], Any]
    # (a Q on the nucleus, a model version's id) -> that version's predictions (nucleus_id, label_set_id,
    # class_index, probability, disagreement).
    rows: Callable[[Q, int], QuerySet]


_source: PredictionSource | None = None


def register(source: PredictionSource) -> None:
    global _source
    _source = source


def active_version(project):
    """The project's active model version (``project``: a Project or its id), or None: its predictions are
    the ones shown."""
    return _source.active_version(project) if _source else None


def rows(nucleus_filter: Q, version_id: int) -> QuerySet:
    """The predictions of a model version (one that :func:`active_version` gave) for the nuclei ``nucleus_filter``
    selects."""
    return _source.rows(nucleus_filter, version_id)
