"""Fast bulk inserts for imports: COPY on PostgreSQL, executemany on SQLite.

Django's bulk_create builds a model instance per row and one large INSERT per batch; at tens of
thousands of nuclei per dataset that dominates an import. Rows here are plain tuples (or, for COPY,
ready lines of text), ids are allocated up front so that child rows (labels) can reference their
parents without a round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from django.db import connection, models, transaction


def uses_copy() -> bool:
    """Whether the database takes COPY (PostgreSQL): then :func:`copy_text` can be used."""
    return connection.vendor == "postgresql"


def check_constraints_now() -> None:
    """Check deferred constraints (Django's foreign keys) at each statement for the rest of the
    transaction (PostgreSQL), so that a bulk insert pays for its checks when it is written rather than
    all at once at the commit."""
    if uses_copy():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def trust_own_references() -> bool:
    """PostgreSQL: for the rest of the transaction, fire no row triggers, that is no foreign-key checks, on
    the rows it inserts (``session_replication_role = replica``), where the database role may set that (a
    superuser, as docker-compose's is, or a role granted SET ON PARAMETER session_replication_role).
    Returns whether it did; elsewhere the checks simply stay. :func:`check_own_references` ends it.

    For the bulk rows of an import only, after :func:`check_constraints_now`: every reference they hold is
    either to a row the same transaction inserted (images, nuclei, labels, with ids allocated here) or to
    a row that its Dataset row references too (project, label set, uploader), whose checks have just run
    and lock those rows against deletion (FOR KEY SHARE) until the commit. The checks were about two
    thirds of the server's time per nucleus. Deletes of referenced rows by others are still checked (the
    triggers of the referenced side fire in their sessions)."""
    if not uses_copy():
        return False
    from django.db import DatabaseError, transaction

    try:
        with transaction.atomic():  # a savepoint: a refused SET must not abort the import's transaction
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
    except DatabaseError:  # permission denied: not a superuser and not granted
        return False
    return True


def check_own_references() -> None:
    """Fire the row triggers (foreign-key checks) again for the rest of the transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def analyze(*tables: type[models.Model]) -> None:
    """PostgreSQL: refresh the planner statistics of tables a bulk load has just filled.

    Without them the planner assumes the tables are (nearly) empty until autovacuum gets round to them,
    or never where autovacuum is off: the review queue's candidate query took 15 ms instead of 0.8 ms
    after an import. ANALYZE samples a fixed number of rows (fractions of a second per table) and takes
    a lock that does not block reads or writes. SQLite: nothing (its planner needs no statistics here).
    """
    if not uses_copy() or not tables:
        return
    names = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in tables)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {names}")


def analyze_after_commit(*tables: type[models.Model]) -> None:
    """:func:`analyze` once the current transaction has committed (at once outside one): statistics of
    rows that are not committed yet would be worth nothing. A failure is logged, never raised: the data
    is stored either way."""
    transaction.on_commit(lambda: analyze(*tables), robust=True)


def allocate_ids(model: type[models.Model], count: int) -> Sequence[int]:
    """``count`` fresh primary keys for ``model``. Call inside the transaction that inserts them."""
    if count == 0:
        return []
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The values nextval hands one query are increasing; unless another session took ids in
            # between, they are one range, and only its ends need to travel.
            cursor.execute(
                "SELECT min(v), max(v), CASE WHEN max(v) - min(v) + 1 = count(*) THEN NULL "
                "ELSE array_agg(v ORDER BY v) END "
                "FROM (SELECT nextval(pg_get_serial_sequence(%s, 'id')) AS v FROM generate_series(1, %s)) AS ids",
                [table, count])
            first, last, scattered = cursor.fetchone()
            return scattered if scattered is not None else range(first, last + 1)
        # SQLite: the import's write transaction holds the database lock, so nobody else can take
        # ids between this read and our insert.
        cursor.execute(f'SELECT COALESCE(MAX("id"), 0) FROM "{table}"')
        start = cursor.fetchone()[0] + 1
        return range(start, start + count)


def copy_text(model: type[models.Model], columns: Sequence[str], lines: Iterable[str]) -> None:
    """PostgreSQL only: COPY lines already in COPY's text format (tab-separated, ``\\N`` for NULL, each
    ending in a newline, special characters escaped by the caller)."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f'COPY "{model._meta.db_table}" ({quoted}) FROM STDIN') as copy:
            copy.write("".join(lines))


def insert_rows(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence], *,
                json_encoded: bool = False) -> int:
    """Insert plain rows (values in ``columns`` order; dicts/lists for JSON columns, or JSON text
    when ``json_encoded``)."""
    table = model._meta.db_table
    fields_by_column = {f.column: f for f in model._meta.concrete_fields}
    json_columns = set() if json_encoded else {
        i for i, name in enumerate(columns) if isinstance(fields_by_column[name], models.JSONField)}
    count = 0
    quoted = ", ".join(f'"{c}"' for c in columns)

    def encoded(row):
        return [json.dumps(v) if i in json_columns else v for i, v in enumerate(row)] if json_columns else row

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(encoded(row))
                    count += 1
            return count
        placeholders = ", ".join(["%s"] * len(columns))
        batch = []
        for row in rows:
            batch.append(encoded(row))
            if len(batch) >= 5000:
                cursor.executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})', batch)
                count += len(batch)
                batch = []
        if batch:
            cursor.executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})', batch)
            count += len(batch)
    return count
