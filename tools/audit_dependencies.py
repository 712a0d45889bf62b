#!/usr/bin/env python3
"""Audit the pinned dependencies for known vulnerabilities with pip-audit.

    python tools/audit_dependencies.py [REQUIREMENTS_FILE ...]   (default: requirements.txt requirements-dev.txt)

Asks PyPI's vulnerability data first, then OSV. Exit status:
  0  every pinned package was checked and none has a known vulnerability, or no vulnerability database
     could be reached from this machine: then it says so plainly ("AUDIT NOT DONE") and names what failed;
  1  known vulnerabilities (listed with the versions that fix them);
  2  pip-audit is not installed (it is in requirements-dev.txt).

Why not trust pip-audit's own exit status: against a PyPI mirror without the per-release JSON API, it
skips every package as "not found on PyPI", prints "No known vulnerabilities found" and exits 0 though
it audited nothing. Here a run that audited nothing counts as no database reached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILES = ["requirements.txt", "requirements-dev.txt"]
SERVICES = ["pypi", "osv"]
TIMEOUT_S = 20  # per request to the vulnerability service


@dataclass
class Audit:
    service: str
    audited: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)     # name -> why
    vulnerable: dict[str, list[dict]] = field(default_factory=dict)  # "name version" -> vulns
    error: str = ""

    @property
    def reached(self) -> bool:
        return not self.error and bool(self.audited)


def run_pip_audit(service: str, files: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip_audit", "--no-deps", "--disable-pip", "--progress-spinner", "off",
               "--format", "json", "--vulnerability-service", service, "--timeout", str(TIMEOUT_S)]
    for name in files:
        command += ["--requirement", name]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def audit(service: str, files: list[str]) -> Audit:
    result = Audit(service)
    try:
        finished = run_pip_audit(service, files)
    except subprocess.TimeoutExpired:
        result.error = "no answer within 10 minutes"
        return result
    try:
        report = json.loads(finished.stdout)
    except json.JSONDecodeError:
        lines = [line for line in finished.stderr.strip().splitlines() if line.strip()]
        result.error = lines[-1][:300] if lines else f"pip-audit exited {finished.returncode} with no report"
        return result
    for dependency in report.get("dependencies", []):
        label = f"{dependency['name']} {dependency.get('version', '?')}"
        if dependency.get("skip_reason"):
            result.skipped[dependency["name"]] = dependency["skip_reason"]
            continue
        result.audited.append(label)
        if dependency.get("vulns"):
            result.vulnerable[label] = dependency["vulns"]
    if not result.audited:
        result.error = (f"it answered but knew none of the {len(result.skipped)} pinned packages "
                        f"(first: {next(iter(result.skipped.values()), 'none listed')})")
    return result


def main(argv: list[str]) -> int:
    files = argv or DEFAULT_FILES
    missing = [name for name in files if not (ROOT / name).is_file()]
    if missing:
        print(f"[audit] no such requirements file: {', '.join(missing)}")
        return 2
    try:
        import pip_audit  # noqa: F401
    except ImportError:
        print("[audit] pip-audit is not installed in this environment: pip install -r requirements-dev.txt")
        return 2

    tried = []
    for service in SERVICES:
        result = audit(service, files)
        if not result.reached:
            tried.append(f"{service}: {result.error}")
            continue
        print(f"[audit] {len(result.audited)} pinned packages of {', '.join(files)} checked against {service}'s "
              "vulnerability data")
        for name, why in result.skipped.items():
            print(f"[audit]   not checked: {name}: {why}")
        if result.vulnerable:
            print(f"[audit] KNOWN VULNERABILITIES in {len(result.vulnerable)} package(s):")
            for label, vulns in result.vulnerable.items():
                for vuln in vulns:
                    fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
                    print(f"[audit]   {label}: {vuln.get('id')} (fixed in: {fixed})")
            return 1
        print("[audit] no known vulnerabilities")
        return 0

    print("[audit] AUDIT NOT DONE: no vulnerability database could be reached from this machine, so the "
          "dependencies were NOT checked.")
    for line in tried:
        print(f"[audit]   {line}")
    print("[audit] Run `python tools/audit_dependencies.py` on a machine with internet access to check them.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
