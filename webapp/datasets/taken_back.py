"""Labels taken back without a successor. The review's undo of a nucleus's first label in a label set removes
its current label and appends no Label row (webapp.review.operations), so the label history alone does not say
that, or when, the nucleus became unlabelled again; what reads the labels as of a past instant (a training's
data snapshot, webapp.training.slide_data) asks here. webapp.review sits above this app and registers how to
read it (ReviewConfig.ready); with nothing registered, no label was ever taken back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.db.models import QuerySet

# (a queryset of Label rows, after, until) -> the ids of those taken back after ``after`` (if given) and until
# ``until`` (if given)
_source: Callable[..., QuerySet] | None = None


def register(source: Callable[..., QuerySet]) -> None:
    global _source
    _source = source


def label_ids(labels: QuerySet, *, after: datetime | None = None, until: datetime | None = None) -> set[int]:
    """The ids of ``labels`` (Label rows) that were taken back without a successor, after ``after`` and at or
    before ``until`` where they are given."""
    return set(_source(labels, after=after, until=until)) if _source else set()
