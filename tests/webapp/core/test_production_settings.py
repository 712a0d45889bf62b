"""Production settings: with the environment the README gives for production, Django's deployment
checks find nothing, and the HTTPS and header settings follow the environment variables."""

import json
import os
import secrets
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# What the README's "Security" section tells a production installation to set.
PRODUCTION = {"DEBUG": "0", "ALLOWED_HOSTS": "nucleus.lab.example.org", "SECURE_SSL_REDIRECT": "1",
              "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}


def clean_env(tmp_path, **env_vars) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SECURE_", "DJANGO_")) and k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    env.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="webapp.settings", **env_vars)
    return env


def settings_in_subprocess(tmp_path, **env_vars) -> dict:
    """The security settings as a process started with this environment sees them."""
    names = ["DEBUG", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
             "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
             "SECURE_CONTENT_TYPE_NOSNIFF", "SECURE_REFERRER_POLICY", "X_FRAME_OPTIONS"]
    code = ("import django, json; django.setup(); from django.conf import settings; "
            f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(tmp_path, **env_vars),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # runs manage.py check --deploy in a new process
def test_check_deploy_passes_with_the_production_environment(tmp_path):
    env = clean_env(tmp_path, SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


def test_production_defaults_turn_on_hsts_and_secure_cookies(tmp_path):
    found = settings_in_subprocess(tmp_path, SECRET_KEY=secrets.token_urlsafe(50), DEBUG="0")
    assert found["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert found["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert found["SECURE_HSTS_PRELOAD"] is False  # opt-in: only for public domains on the preload list
    assert found["SESSION_COOKIE_SECURE"] is True and found["CSRF_COOKIE_SECURE"] is True
    assert found["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert found["SECURE_REFERRER_POLICY"] == "same-origin"
    assert found["X_FRAME_OPTIONS"] == "DENY"
    # A plain-HTTP start on the local machine must keep working until HTTPS is set up in front.
    assert found["SECURE_SSL_REDIRECT"] is False and found["SECURE_PROXY_SSL_HEADER"] is None


def test_environment_sets_hsts_redirect_and_proxy_header(tmp_path):
    found = settings_in_subprocess(tmp_path, SECRET_KEY=secrets.token_urlsafe(50), DEBUG="0",
                                   SECURE_HSTS_SECONDS="600", SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
                                   SECURE_HSTS_PRELOAD="1", SECURE_SSL_REDIRECT="1",
                                   SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", SECURE_COOKIES="0")
    assert found["SECURE_HSTS_SECONDS"] == 600
    assert found["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert found["SECURE_HSTS_PRELOAD"] is True
    assert found["SECURE_SSL_REDIRECT"] is True
    assert found["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert found["SESSION_COOKIE_SECURE"] is False


def test_debug_sends_no_hsts(tmp_path):
    found = settings_in_subprocess(tmp_path, DEBUG="1")
    assert found["SECURE_HSTS_SECONDS"] == 0 and found["SESSION_COOKIE_SECURE"] is False


@pytest.mark.parametrize("env_vars, named", [
    ({"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"}, "SECURE_PROXY_SSL_HEADER"),
    ({"SECURE_HSTS_SECONDS": "-1"}, "SECURE_HSTS_SECONDS"),
    ({"SECURE_SSL_REDIRECT": "sometimes"}, "SECURE_SSL_REDIRECT"),
])
def test_bad_security_values_name_the_variable(tmp_path, env_vars, named):
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=clean_env(tmp_path, **env_vars),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    # manage.py turns the settings' ImproperlyConfigured into one line naming the variable.
    assert result.stderr.strip().startswith("error: ") and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.django_db
def test_https_response_carries_hsts_and_headers(client, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get("/login/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
