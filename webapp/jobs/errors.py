"""Job errors as a user may read them: the user's file names, never this server's paths.

A job's error is shown to everyone who may see the job. An exception about a file (``FileNotFoundError``,
a ``DataError`` from a reader, a library's own message) names it by its absolute path on the server,
which tells a user where the data and the code live. :func:`public_error` is applied to every error
stored on a job: a file in an upload's staging folder keeps its path inside the upload (what the user
sent), any other absolute path on this machine becomes its file name.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from webapp.core import media

# An absolute path: "/" + at least two components, not inside a URL ("http://h/a/b") or a relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w/.:~-])/[^\s/'\"`()\[\]{}<>,;:]+(?:/[^\s/'\"`()\[\]{}<>,;:]*)+")


def public_error(text: str) -> str:
    # The staging folder as this process names it: under MEDIA_ROOT, or under the mirror in remote mode
    # (webapp.core.media), spelt as configured or resolved.
    roots = {str(root / "staging") for root in (media.root(), media.root().resolve())}
    staging = "(?:" + "|".join(re.escape(root) for root in sorted(roots, key=len, reverse=True)) + ")"
    text = re.sub(staging + r"/[0-9a-f]+/(?:extracted/|files/)?", "", text)
    return _ABSOLUTE_PATH.sub(_file_name, text)


def _file_name(match: re.Match) -> str:
    path = match.group(0)
    first = path.split("/", 2)[1]
    if not _is_top_level_folder(first):
        return path  # not a path on this machine ("/api/jobs/3/", "/s/" in a message)
    return path.rstrip("/").rsplit("/", 1)[-1] or path


@lru_cache(maxsize=64)
def _is_top_level_folder(name: str) -> bool:
    return Path("/", name).is_dir()
