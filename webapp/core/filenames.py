"""File names for downloads: what every browser and file system accepts."""

import re


def safe_file_name(text: str, fallback: str = "export") -> str:
    """Letters and digits of any script, dots, dashes and underscores only: a project named "Colon: trial 2"
    downloads as "Colon_trial_2" (a colon is refused on Windows, spaces need quoting in shells), one named
    "乳腺癌" as "乳腺癌" (it was "", so every such export got the same name). Responses send a non-ASCII
    name as RFC 6266's ``filename*`` (Django's ``content_disposition_header``)."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_.") or fallback
