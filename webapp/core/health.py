"""Health of the services the application depends on: the database, Redis and the workers."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection


def database_state() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:
        return {"ok": False, "vendor": connection.vendor, "error": str(exc)[:300]}


def redis_state() -> dict:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": str(exc)[:300]}


def live_workers(timeout: float = 1.0) -> list[str]:
    from workers.celery import app

    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:
        return []
    return sorted(name for reply in replies for name in reply)


def health() -> tuple[dict, bool]:
    database = database_state()
    cache = redis_state()
    workers = live_workers() if cache["ok"] else []
    ok = database["ok"] and cache["ok"]
    return {"status": "ok" if ok else "unavailable", "database": database, "redis": cache,
            "workers": {"live": len(workers), "names": workers}}, ok
