"""Health of the services the application depends on: the database, Redis, the media storage and the workers.

The health endpoint is open to anyone (monitors, the run command's smoke test), so it must stay cheap:
the database and Redis answer a ping in about a millisecond, but asking the workers takes a whole
second of waiting for replies. Their answer is cached (Django's cache) and refreshed by one request
at a time; everyone else is told the last known answer.
"""

from __future__ import annotations

import os
import time

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

# The last answer: {"workers": {name: [queues]}, "at": epoch seconds}. Its own key, not the one that held names
# only: a web host still on the previous release (a rolling upgrade, a rollback) reads that one as before.
WORKERS_KEY = "health:workers:queues"
WORKERS_REFRESH_KEY = "health:workers:refreshing"
# How long an answer is trusted: a short time when no worker answered, so that a starting
# installation sees its first worker soon (the run command waits for one).
WORKERS_FRESH_S = 15
WORKERS_FRESH_WHEN_NONE_S = 3
PING_TIMEOUT_S = 1.0


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


STORAGE_KEY = "health:storage"
STORAGE_FRESH_S = 10


def storage_state() -> dict:
    """Local: MEDIA_ROOT can be written. Remote (STORAGE_URL): the bucket answers, asked with short
    timeouts and no retries (a store that is down must not hold a health request for a minute), and the
    answer is cached for a few seconds."""
    if not settings.STORAGE_URL:
        media = settings.MEDIA_ROOT
        writable = os.access(media, os.W_OK) if os.path.isdir(media) else os.access(os.path.dirname(media), os.W_OK)
        return {"ok": writable, "kind": "local"} if writable else \
            {"ok": False, "kind": "local", "error": f"MEDIA_ROOT {media} is not writable"}
    cached = _cache_get(STORAGE_KEY)
    if cached is not None:
        return cached
    state = {"ok": True, "kind": "s3"}
    try:
        import boto3
        from botocore.config import Config

        options = settings.STORAGES["default"]["OPTIONS"]
        client = boto3.client("s3", endpoint_url=options.get("endpoint_url"), region_name=options.get("region_name"),
                              aws_access_key_id=options.get("access_key"),
                              aws_secret_access_key=options.get("secret_key"),
                              config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))
        client.head_bucket(Bucket=options["bucket_name"])
    except Exception as exc:
        state = {"ok": False, "kind": "s3", "error": str(exc)[:300]}
    try:
        cache.set(STORAGE_KEY, state, timeout=STORAGE_FRESH_S)
    except Exception:
        pass
    return state


def live_workers(timeout: float = PING_TIMEOUT_S) -> dict[str, list[str]]:
    """The live workers' names, each with the queues it takes jobs from (one broadcast, as a ping)."""
    from workers.celery import app

    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:
        return {}
    return {name: sorted(queue["name"] for queue in queues or []) for name, queues in sorted(replies.items())}


def _cache_get(key):
    try:
        return cache.get(key)
    except Exception:  # a cache in an unreachable Redis: act as if nothing were cached
        return None


def cached_workers() -> tuple[dict[str, list[str]], float]:
    """The live workers (name -> queues) and how many seconds ago they were asked."""
    now = time.time()
    last = _cache_get(WORKERS_KEY)
    if last is not None:
        fresh_for = WORKERS_FRESH_S if last["workers"] else WORKERS_FRESH_WHEN_NONE_S
        if now - last["at"] < fresh_for:
            return last["workers"], now - last["at"]
    try:
        refreshing_elsewhere = not cache.add(WORKERS_REFRESH_KEY, True, timeout=int(PING_TIMEOUT_S * 5))
    except Exception:
        refreshing_elsewhere = False
    if refreshing_elsewhere and last is not None:
        return last["workers"], now - last["at"]
    workers = live_workers()
    try:
        cache.set(WORKERS_KEY, {"workers": workers, "at": time.time()}, timeout=3600)
        cache.delete(WORKERS_REFRESH_KEY)
    except Exception:
        pass
    return workers, 0.0


def consumers(workers: dict[str, list[str]]) -> dict[str, int]:
    """How many live workers take each of the job queues ("default", "gpu")."""
    return {queue: sum(queue in queues for queues in workers.values()) for queue in ("default", "gpu")}


# A job queued this long without a worker is worth a look at the workers. Younger ones are not asked about: asking
# may wait for the workers' answers (a second), and every job is answered with its 202 while it is queued.
WAITING_AFTER_S = 10


def waiting_note(job) -> str | None:
    """For a job queued a while that no live worker takes (its queue has none, or none answers), what to start;
    None otherwise."""
    if job.state != "queued" or (timezone.now() - job.created_at).total_seconds() < WAITING_AFTER_S:
        return None
    try:
        workers, _ = cached_workers()
    except Exception:
        return None
    if consumers(workers)[job.queue]:
        return None
    if job.queue == "gpu":
        return ("No live worker takes trainings, predictions and inferences (the gpu queue): start a GPU worker "
                "(celery -A workers worker -Q gpu), or on a CPU host a worker with -Q default,gpu and "
                "ALLOW_CPU_GPU_QUEUE=1. The job starts as soon as one is up.")
    return ("No live worker takes imports, exports and deletions (the default queue): start one "
            "(celery -A workers worker -Q default). The job starts as soon as one is up.")


def forget_workers() -> None:
    """Drop the cached answer (tests; a worker that has just been started)."""
    cache.delete_many([WORKERS_KEY, WORKERS_REFRESH_KEY])


def health(*, detailed: bool = False) -> tuple[dict, bool]:
    """The state of each service; ``detailed`` (staff) adds the workers' names and the raw errors."""
    database = database_state()
    cache_state = redis_state()
    storage = storage_state()
    live, age = cached_workers() if cache_state["ok"] else ({}, 0.0)
    ok = database["ok"] and cache_state["ok"] and storage["ok"]
    # Per queue: a worker for imports alone (-Q default) leaves trainings queued for ever.
    workers = {"live": len(live), "queues": consumers(live), "checked_s_ago": round(age, 1)}
    if detailed:
        workers["names"] = sorted(live)
    else:
        # Error texts name hosts and ports: only staff see them.
        for state in (database, cache_state, storage):
            if not state["ok"]:
                state["error"] = "unreachable"
    return {"status": "ok" if ok else "unavailable", "database": database, "redis": cache_state,
            "storage": storage, "workers": workers}, ok
