"""The front end's ES modules as production serves them, and the CSRF token they send.

static/js is served as written (no build step): the pages load entry modules, which import the rest by
relative paths. Production collects the files with its own static storage; the imports must still
reach the collected files, and reach each under the same URL as `{% static %}` gives (else a module
would load twice, with two copies of its state). api.js sends the token base.html renders into
<meta name="csrf-token">, which works whatever the CSRF cookie settings are.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.webapp.core.test_escaping import IMPORT, template_scripts
from tests.webapp.core.test_production_settings import PRODUCTION, clean_env

TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.mark.django_db
@pytest.mark.parametrize("csrf_settings", [{}, {"CSRF_COOKIE_HTTPONLY": True}, {"CSRF_USE_SESSIONS": True}],
                         ids=["cookie", "httponly-cookie", "session"])
def test_the_pages_csrf_token_is_what_api_js_needs_to_post(settings, owner, csrf_settings):
    from django.test import Client

    for name, value in csrf_settings.items():
        setattr(settings, name, value)
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    token = TOKEN.search(client.get("/account/").content.decode())[1]
    refused = client.post("/api/projects/", {"name": "no token"}, content_type="application/json")
    assert refused.status_code == 403
    made = client.post("/api/projects/", {"name": "with the token"}, content_type="application/json",
                       HTTP_X_CSRFTOKEN=token)
    assert made.status_code == 201, made.content


@pytest.mark.slow  # collectstatic in a new process, compressing every file (about 30 s on 2 cores)
def test_collected_static_files_keep_every_module_import_resolvable(tmp_path):
    static_root = tmp_path / "static"
    env = clean_env(tmp_path, SECRET_KEY=secrets.token_urlsafe(50), STATIC_ROOT=str(static_root), **PRODUCTION)
    result = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    # A hashing storage (ManifestStaticFilesStorage) names each file in staticfiles.json; others keep names.
    manifest_file = static_root / "staticfiles.json"
    manifest = json.loads(manifest_file.read_text())["paths"] if manifest_file.exists() else {}
    served = lambda name: manifest.get(name, name)  # noqa: E731 - the name {% static name %} gives

    entries = {path for _, path, _ in template_scripts() if path.startswith("js/")}
    assert entries
    checked, todo = set(), list(entries)
    while todo:
        name = todo.pop()
        if name in checked:
            continue
        checked.add(name)
        collected = static_root / served(name)
        assert collected.is_file(), f"{name} was not collected as {served(name)}"
        for match in IMPORT.finditer(collected.read_text()):
            # What the browser asks for: the import resolved against the collected file's own URL.
            target = posixpath.normpath(posixpath.join(posixpath.dirname(served(name)), match["path"]))
            assert (static_root / target).is_file(), f"{served(name)} imports {match['path']}: not collected"
            source = next((src for src, dst in manifest.items() if dst == target), target)
            assert served(source) == target, f"{served(name)} imports {target}, but pages load {served(source)}"
            todo.append(source)
    assert "js/api.js" in checked and "js/dom.js" in checked
