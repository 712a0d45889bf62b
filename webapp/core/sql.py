"""Plain SQL for the review queue's hot paths, where the ORM's query compilation was most of the cost.

A reviewer's claim-and-save cycle runs about a dozen statements; compiled by the ORM each one cost
0.5-2 ms of CPU, executed from a string 0.04 ms (benchmarks/review_load.py, README "Many reviewers at
once"). Statements here name tables through the models' ``db_table`` and take every value as a
parameter; what they return is converted as the ORM would (``Model.objects.raw`` for model rows,
:func:`json_value` and :func:`datetime_value` for loose columns), so PostgreSQL and SQLite agree.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone as dt_timezone

from django.db import connection
from django.utils.dateparse import parse_datetime


def table(model) -> str:
    """The model's table name, quoted for the current database."""
    return connection.ops.quote_name(model._meta.db_table)


def fetch_one(sql: str, params) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def execute(sql: str, params) -> int:
    """Run a statement; the number of rows it touched."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetch_all(sql: str, params) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def first(raw_queryset):
    """The first row of a ``Model.objects.raw(...)`` query, or None."""
    return next(iter(raw_queryset), None)


def lock_clause(*, of: str | None = None, no_key: bool = False, skip_locked: bool = False) -> str:
    """``FOR [NO KEY] UPDATE [OF t] [SKIP LOCKED]`` where the database has row locks; "" on SQLite, which
    serialises writers anyway (as the ORM's ``select_for_update`` does there)."""
    if not connection.features.has_select_for_update:
        return ""
    clause = " FOR NO KEY UPDATE" if no_key and connection.vendor == "postgresql" else " FOR UPDATE"
    if of and connection.features.has_select_for_update_of:
        clause += f" OF {of}"
    if skip_locked and connection.features.has_select_for_update_skip_locked:
        clause += " SKIP LOCKED"
    return clause


def json_text(column: str, key: str) -> str:
    """SQL for the text of a JSON column's top-level ``key`` (a constant of the code, never a user's): ``->>`` on
    PostgreSQL, ``json_extract`` on SQLite, whose ``->>`` needs 3.38 (Ubuntu 22.04's Python has 3.37)."""
    if connection.vendor == "postgresql":
        return f"({column} ->> '{key}')"
    return f"json_extract({column}, '$.{key}')"


def json_value(value):
    """A JSON column read by a plain cursor: text on SQLite (and for PostgreSQL's jsonb, which Django
    has psycopg hand over as text), already a Python value otherwise."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def datetime_value(value) -> datetime | None:
    """A timestamp column read by a plain cursor: aware on PostgreSQL, ISO text in UTC on SQLite."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt_timezone.utc)
    return value


def partial_instance(model, **values):
    """A model instance with only these fields loaded (as ``.only()`` gives: the others load when first
    used, and ``save()`` writes only the loaded ones)."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])
