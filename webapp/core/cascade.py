"""Deleting many rows, with everything that refers to them, in a few set-wise statements.

Django's ``QuerySet.delete()`` (its deletion Collector) loads the primary keys of every row it will delete,
table by table down the cascade, and deletes them in batches of ``id IN (...)`` lists: for a slide of 101,432
nuclei that was some 4,500 statements on SQLite, most of the time spent building those lists in Python (61 s,
holding SQLite's one write lock all along, so that every save of the application waited and then failed;
benchmarks/slide_delete.py). :func:`delete_cascading` follows the same ``on_delete`` rules, read from the same
model metadata, but each step is one statement over a subquery (``DELETE FROM label WHERE nucleus_id IN (SELECT
id FROM nucleus WHERE image_id IN (...))``): the database does the walking, with the indexes on the referring
columns, and nothing is fetched.

What it leaves out of the Collector's work is what no model here needs, and it refuses (falls back to the
Collector for that part) rather than skip it: models with delete signal receivers, generic relations, parents
in multi-table inheritance, and ``on_delete`` rules other than CASCADE, SET_NULL and DO_NOTHING. Model
``delete()`` methods are not called by a queryset's deletion either way.

It runs in the caller's transaction (call it inside one: a failure half-way leaves the statements before it
to be rolled back), and the foreign keys, checked at the commit, still guard against anything left referring
to a deleted row.
"""

from __future__ import annotations

from django.db import models
from django.db.models import signals
from django.db.models.deletion import get_candidate_relations_to_delete


def delete_cascading(queryset: models.QuerySet) -> int:
    """Delete ``queryset``'s rows and, first, what refers to them, as each referring field's ``on_delete``
    says (CASCADE: deleted the same way, SET_NULL: set to null). Returns the number of ``queryset``'s own
    rows deleted."""
    model = queryset.model
    relations = [relation for relation in get_candidate_relations_to_delete(model._meta)
                 if relation.field.remote_field.on_delete is not models.DO_NOTHING]
    if not _plain(model) or not all(_handled(model, relation) for relation in relations):
        # PROTECT, RESTRICT, SET_DEFAULT, SET(...), a cascade onto its own table, signals: the Collector's.
        return queryset.delete()[1].get(model._meta.label, 0)
    keys = queryset.values("pk")
    for relation in relations:
        field = relation.field
        referring = relation.related_model._base_manager.using(queryset.db).filter(**{f"{field.name}__in": keys})
        if field.remote_field.on_delete is models.SET_NULL:
            if relation.related_model is model:
                # Rows of the same table: only those that stay need the null (the others go below).
                referring = referring.exclude(pk__in=keys)
            referring.update(**{field.name: None})
        else:
            delete_cascading(referring)
    return queryset._raw_delete(queryset.db)


def _handled(model: type[models.Model], relation) -> bool:
    on_delete = relation.field.remote_field.on_delete
    return on_delete is models.SET_NULL or (on_delete is models.CASCADE and relation.related_model is not model)


def _plain(model: type[models.Model]) -> bool:
    """Whether deleting ``model``'s rows needs no Python of the Collector's: no signal receivers, no generic
    relations, no multi-table parents."""
    opts = model._meta
    return not (signals.pre_delete.has_listeners(model) or signals.post_delete.has_listeners(model)
                or opts.private_fields or opts.parents)
