"""Database ids as the API takes them: whole numbers a 64-bit column can hold.

A larger number must be a 400 naming the field, not an OverflowError from the database driver (a 500).
"""

from rest_framework import serializers

MAX_ID = 2**63 - 1  # ids are 64-bit integers in every database


def id_field(**options) -> serializers.IntegerField:
    """A serializer field for the id of a row (a nucleus, a label version, a job): 1 to :data:`MAX_ID`."""
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **options)


def parse_ids(text: str, field: str, limit: int) -> tuple[int, ...]:
    """Comma-separated ids from a query parameter (at most ``limit`` kept), or a ValidationError naming ``field``."""
    try:
        ids = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise serializers.ValidationError({field: "comma-separated nucleus ids"}) from None
    if any(not 1 <= value <= MAX_ID for value in ids):
        raise serializers.ValidationError({field: f"ids are whole numbers from 1 to {MAX_ID}"})
    return ids[:limit]
