"""pyflakes over every Python file of the repository: no unused import or variable, no undefined name, no
f-string without a placeholder. These are the slips a reader trips over and a reviewer misses.

pyflakes ignores ``# noqa``; a line that carries it is let through here, so a deliberate import for its side
effect (settings importing ``mlcore.limits`` to check the environment at start) says so where it stands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyflakes.api import checkPath
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("mlcore", "webapp", "workers", "benchmarks", "tests", "tools", ".ci")
SKIPPED_FOLDERS = {"migrations", "__pycache__"}


class Collected(Reporter):
    """A reporter that keeps pyflakes' findings instead of printing them."""

    def __init__(self):
        self.findings: list[str] = []

    def unexpectedError(self, filename, msg):
        self.findings.append(f"{filename}: {msg}")

    def syntaxError(self, filename, msg, lineno, offset, text):
        self.findings.append(f"{filename}:{lineno}: {msg}")

    def flake(self, message):
        line = Path(message.filename).read_text(encoding="utf-8").splitlines()[message.lineno - 1]
        if "# noqa" not in line:
            self.findings.append(str(message))


def python_files() -> list[Path]:
    files = [ROOT / "run.py", ROOT / "manage.py"]
    for folder in CHECKED:
        files += [path for path in sorted((ROOT / folder).rglob("*.py"))
                  if not SKIPPED_FOLDERS & set(path.relative_to(ROOT).parts)]
    return [path for path in files if path.exists()]


def test_the_walk_finds_the_code():
    files = {path.relative_to(ROOT).as_posix() for path in python_files()}
    assert {"run.py", "mlcore/train.py", "webapp/settings.py", "workers/tasks.py"} <= files
    assert not any("/migrations/" in name for name in files)


@pytest.mark.parametrize("folder", ("run.py and manage.py",) + CHECKED)
def test_no_pyflakes_findings(folder):
    reporter = Collected()
    for path in python_files():
        relative = path.relative_to(ROOT)
        in_folder = relative.parts[0] == folder if len(relative.parts) > 1 else folder == "run.py and manage.py"
        if in_folder:
            checkPath(str(path), reporter)
    assert not reporter.findings, "pyflakes:\n" + "\n".join(
        finding.replace(str(ROOT) + "/", "") for finding in reporter.findings)
