"""Logging filters named in settings.LOGGING."""

from __future__ import annotations

import logging


class RefusalWithoutTraceback(logging.Filter):
    """Django logs a refused request (a 403 for a role too low, a 404 for someone outside a project) with the
    exception's whole traceback: dozens of lines per click in a worker's or server's log that say nothing
    wrong happened. Keep the one line ("Forbidden (Permission denied): /projects/3/edit/"), drop the
    traceback. Server errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) in (403, 404):
            record.exc_info = None
            record.exc_text = None
        return True
