"""Django's Redis cache, keeping one client per connection pool.

Django's client builds a new ``redis.Redis`` for every cache call (about 0.3 ms of CPU: it fills a table
of response callbacks each time). Every API request asks the cache at least once (webapp.core.authentication
counts failed tokens), so the client is kept instead; ``redis.Redis`` is safe to share between threads,
its connections come from the pool either way.
"""

from __future__ import annotations

import logging
import uuid

from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.db import transaction

logger = logging.getLogger(__name__)


class ReusedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = self._client(connection_pool=self._get_connection_pool(write))
        return client


class ReusedClientRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient


# ---- cached reads that survive an unreachable cache
#
# Values cached for speed only: with Redis down, a read computes (the cache answers "nothing"), a
# write or an invalidation is dropped (the TTL bounds what a dropped invalidation leaves stale).

def cache_get(key: str):
    try:
        return cache.get(key)
    except Exception:
        logger.warning("cache unreachable: %s computed instead", key.split(":", 2)[:2])
        return None


def cache_get_many(keys: list[str]) -> dict:
    try:
        return cache.get_many(keys)
    except Exception:
        logger.warning("cache unreachable: computed instead")
        return {}


def cache_set(key: str, value, timeout: float) -> None:
    try:
        cache.set(key, value, timeout)
    except Exception:
        logger.warning("cache unreachable: %s not kept", key.split(":", 2)[:2])


def cache_delete_many(keys: list[str]) -> None:
    try:
        cache.delete_many(keys)
    except Exception:
        logger.warning("cache unreachable: %d keys not invalidated (their TTL ends them)", len(keys))


def delete_on_commit(keys: list[str]) -> None:
    """Invalidate once the transaction that changed the data commits (at once outside a transaction):
    a reader between the change and the commit would otherwise cache the old data again."""
    keys = list(keys)
    if keys:
        transaction.on_commit(lambda: cache_delete_many(keys))


# ---- keys of the review's cached reads
#
# Here, in core, so that the apps that change the data (training stores predictions, review records
# labels) and the app that reads it (review) share them without importing each other. The version
# after the prefix changes when the shape of a value changes, so that a deploy never reads the old one.

def label_set_classes_key(label_set_id: int) -> str:
    return f"review:v1:label-set-classes:{label_set_id}"


def nucleus_bounds_key(project_id: int, datasets: tuple) -> str:
    """The project's smallest and largest nucleus id (the random review order draws ids between them), for its
    datasets as they are (``datasets``: their count, largest id and nuclei): an import or a deletion makes
    another key, so nothing needs forgetting."""
    return f"review:v1:nucleus-bounds:{project_id}:{':'.join(str(part) for part in datasets)}"


def prediction_count_key(version_id: int, label_set_id: int) -> str:
    return f"review:v1:prediction-count:{version_id}:{label_set_id}"


def unreviewed_counts_key(label_set_id: int) -> str:
    """One key per label set (the value names the model version it counted): a decision in the label
    set invalidates it without knowing which versions were counted."""
    return f"review:v1:unreviewed-class-counts:{label_set_id}"


def frontier_generation_key(label_set_id: int) -> str:
    return f"review:v1:frontier-generation:{label_set_id}"


FRONTIER_TTL = 300.0   # seconds a review queue's or gallery's frontier lives before a search from the top


def forget_frontiers(label_set_id: int) -> None:
    """The frontiers of this label set's queues and galleries are stale (a nucleus lost its human label in an
    undo; predictions were stored): search from the top again, now and once the change commits (a search in
    between would find the old state). The generation outlives every frontier kept under the previous one
    (they live FRONTIER_TTL at most)."""
    def new_generation():
        cache_set(frontier_generation_key(label_set_id), uuid.uuid4().hex, timeout=2 * FRONTIER_TTL)

    new_generation()
    transaction.on_commit(new_generation)


def frontier_key(generation, version_id: int, label_set_id: int, strategy: str, user_id: int | None,
                 sliver: bool) -> str:
    return (f"review:v1:frontier:{label_set_id}:{generation}:{version_id}:{strategy}:"
            f"{'' if user_id is None else user_id}:{int(sliver)}")
