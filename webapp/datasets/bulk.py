"""Fast bulk inserts for imports: COPY on PostgreSQL, executemany on SQLite.

Django's bulk_create builds a model instance per row and one large INSERT per batch; at tens of
thousands of nuclei per dataset that dominates an import. Rows here are plain tuples, ids are
allocated up front so that child rows (labels) can reference their parents without a round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from django.db import connection, models


def allocate_ids(model: type[models.Model], count: int) -> list[int]:
    """``count`` fresh primary keys for ``model``. Call inside the transaction that inserts them."""
    if count == 0:
        return []
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                           [table, count])
            return [row[0] for row in cursor.fetchall()]
        # SQLite: the import's write transaction holds the database lock, so nobody else can take
        # ids between this read and our insert.
        cursor.execute(f'SELECT COALESCE(MAX("id"), 0) FROM "{table}"')
        start = cursor.fetchone()[0] + 1
        return list(range(start, start + count))


def insert_rows(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert plain rows (values in ``columns`` order; dicts/lists for JSON columns)."""
    table = model._meta.db_table
    fields_by_column = {f.column: f for f in model._meta.concrete_fields}
    json_columns = {i for i, name in enumerate(columns) if isinstance(fields_by_column[name], models.JSONField)}
    count = 0
    quoted = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row([json.dumps(v) if i in json_columns else v for i, v in enumerate(row)])
                    count += 1
            return count
        placeholders = ", ".join(["%s"] * len(columns))
        batch = []
        for row in rows:
            batch.append([json.dumps(v) if i in json_columns else v for i, v in enumerate(row)])
            if len(batch) >= 5000:
                cursor.executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})', batch)
                count += len(batch)
                batch = []
        if batch:
            cursor.executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})', batch)
            count += len(batch)
    return count
