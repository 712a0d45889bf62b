"""A wrong environment value stops the start with a message that names the variable."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run_check(tmp_path, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY", "DEBUG", "REDIS_URL"}}
    env.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="webapp.settings", **env_vars)
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("env_vars, named", [
    ({"DEBUG": "maybe"}, "DEBUG"),
    ({"DATABASE_URL": "mysqlx://nowhere/db"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
    ({"DEBUG": "0"}, "SECRET_KEY"),
    ({"MAX_UPLOAD_BYTES": "lots"}, "MAX_UPLOAD_BYTES"),
    ({"MAX_IMAGE_PIXELS": "0"}, "MAX_IMAGE_PIXELS"),
    ({"EMAIL_PORT": "smtp"}, "EMAIL_PORT"),
    ({"EMAIL_USE_TLS": "1", "EMAIL_USE_SSL": "1"}, "EMAIL_USE_SSL"),
    ({"SLIDE_TILE_CACHE_BYTES": "-1"}, "SLIDE_TILE_CACHE_BYTES=-1 must be 0 or more"),
    ({"MAX_UPLOAD_BYTES": "0"}, "MAX_UPLOAD_BYTES=0 must be 1 or more"),
    ({"MEDIA_URL_EXPIRY_S": "-5"}, "MEDIA_URL_EXPIRY_S=-5 must be 1 or more"),
])
def test_bad_value_fails_naming_the_variable(tmp_path, env_vars, named):
    result = run_check(tmp_path, **env_vars)
    assert result.returncode != 0
    # One line naming the variable (manage.py turns the settings' ImproperlyConfigured into it), no traceback.
    assert result.stderr.strip().startswith("error: ") and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # starts Django in new processes
def test_defaults_work_and_keep_a_generated_secret_key(tmp_path):
    result = run_check(tmp_path)
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "secret_key"
    assert key_file.exists() and len(key_file.read_text()) >= 40
    first = key_file.read_text()
    run_check(tmp_path)
    assert key_file.read_text() == first


def test_mail_goes_to_the_console_without_a_mail_server_and_by_smtp_with_one(tmp_path):
    def backend(**env_vars) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
        env.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="webapp.settings", **env_vars)
        code = "import django; django.setup(); from django.conf import settings; print(settings.EMAIL_BACKEND)"
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    assert backend() == "django.core.mail.backends.console.EmailBackend"
    assert backend(EMAIL_HOST="smtp.lab.example") == "django.core.mail.backends.smtp.EmailBackend"
