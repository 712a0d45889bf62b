"""Free text a person writes about a project or a dataset (a description, a provenance note)."""

from __future__ import annotations

import unicodedata

from .domain_errors import Invalid

NOTE_MAX_LENGTH = 10_000


def clean_note(text: str | None, *, field: str, what: str, max_length: int = NOTE_MAX_LENGTH) -> str:
    """``text`` with its ends stripped and its line breaks as "\\n" (a browser's textarea sends "\\r\\n",
    which would otherwise read as an edit every time a form is saved), or :class:`Invalid` on ``field``:
    longer than ``max_length``, or a control character other than a line break or a tab."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > max_length:
        raise Invalid(f"{what} has at most {max_length} characters ({len(text)} given).", field=field,
                      code="max_length")
    control = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t"), None)
    if control is not None:
        raise Invalid(f"{what} contains the control character {control!r}.", field=field)
    return text
