"""The production cache (Redis, one client kept per connection pool) works as Django's does."""

import os
import threading
import uuid

import pytest

from webapp.core.cache import ReusedClientRedisCache


@pytest.fixture
def redis_cache():
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set: the Redis cache needs a real Redis")
    return ReusedClientRedisCache(url, {"KEY_PREFIX": f"test-{uuid.uuid4().hex}", "TIMEOUT": 60})


def test_the_redis_cache_keeps_its_client_and_still_answers_like_djangos(redis_cache):
    assert redis_cache.add("hits", 1, timeout=30)
    assert not redis_cache.add("hits", 5, timeout=30)
    assert redis_cache.incr("hits") == 2
    redis_cache.set_many({"a": [1, 2], "b": {"c": "d"}})
    assert redis_cache.get_many(["a", "b", "missing"]) == {"a": [1, 2], "b": {"c": "d"}}
    client = redis_cache._cache.get_client(write=True)
    assert redis_cache._cache.get_client(write=True) is client

    seen = []

    def work(k):
        for i in range(50):
            redis_cache.incr("hits")
        seen.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == [0, 1, 2, 3] and redis_cache.get("hits") == 202
    redis_cache.delete_many(["hits", "a", "b"])
