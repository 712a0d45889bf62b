"""tools/audit_dependencies.py: a run that audited nothing never passes for a clean audit."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture
def audit_tool():
    spec = importlib.util.spec_from_file_location("audit_dependencies", ROOT / "tools" / "audit_dependencies.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _answers(monkeypatch, module, by_service: dict):
    def fake(service, files):
        answer = by_service[service]
        if isinstance(answer, str):  # an unreachable service: pip-audit prints a traceback, no report
            return subprocess.CompletedProcess([], 1, stdout="", stderr=f"Traceback...\n{answer}\n")
        return subprocess.CompletedProcess([], 0, stdout=json.dumps({"dependencies": answer, "fixes": []}), stderr="")
    monkeypatch.setattr(module, "run_pip_audit", fake)


SKIPPED = [{"name": "django", "skip_reason": "Dependency not found on PyPI and could not be audited: django (5.2.19)"}]
CLEAN = [{"name": "django", "version": "5.2.19", "vulns": []}, {"name": "celery", "version": "5.7.0", "vulns": []}]
VULNERABLE = [{"name": "django", "version": "5.2.1", "vulns": [
    {"id": "PYSEC-2025-1", "fix_versions": ["5.2.2"], "aliases": [], "description": "..."}]}]


def test_nothing_audited_says_so_plainly_and_passes(audit_tool, monkeypatch, capsys):
    _answers(monkeypatch, audit_tool, {"pypi": SKIPPED, "osv": "ConnectionError: Failed to resolve 'api.osv.dev'"})
    assert audit_tool.main([]) == 0
    out = capsys.readouterr().out
    assert "AUDIT NOT DONE" in out and "NOT checked" in out
    assert "pypi: it answered but knew none of the 1 pinned packages" in out
    assert "osv: ConnectionError" in out
    assert "no known vulnerabilities" not in out


def test_known_vulnerability_fails_and_names_the_fix(audit_tool, monkeypatch, capsys):
    _answers(monkeypatch, audit_tool, {"pypi": SKIPPED, "osv": VULNERABLE})
    assert audit_tool.main([]) == 1
    out = capsys.readouterr().out
    assert "checked against osv" in out
    assert "django 5.2.1: PYSEC-2025-1 (fixed in: 5.2.2)" in out


def test_clean_audit_passes(audit_tool, monkeypatch, capsys):
    _answers(monkeypatch, audit_tool, {"pypi": CLEAN, "osv": "unused"})
    assert audit_tool.main([]) == 0
    out = capsys.readouterr().out
    assert "2 pinned packages" in out and "no known vulnerabilities" in out


def test_every_pinned_requirement_is_handed_to_pip_audit(audit_tool, monkeypatch):
    seen = {}

    def fake(service, files):
        seen["files"] = files
        return subprocess.CompletedProcess([], 0, stdout=json.dumps({"dependencies": CLEAN}), stderr="")
    monkeypatch.setattr(audit_tool, "run_pip_audit", fake)
    audit_tool.main([])
    # pip-audit does not follow "-r requirements.txt" inside requirements-dev.txt: both files are passed.
    assert seen["files"] == ["requirements.txt", "requirements-dev.txt"]
