"""File names for downloads: what every browser and file system accepts."""

import re


def safe_file_name(text: str, fallback: str = "export") -> str:
    """Letters, digits, dots, dashes and underscores only: a project named "Colon: trial 2" downloads as
    "Colon_trial_2" (a colon is refused on Windows, spaces need quoting in shells)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or fallback
