"""``manage.py ensure_bucket`` (docker-compose's web service runs it at start) against moto's S3 server."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


def _run(**options) -> str:
    out = StringIO()
    call_command("ensure_bucket", stdout=out, **options)
    return out.getvalue()


def test_creates_the_bucket_once_then_finds_it(remote_media):
    remote_media.client.delete_bucket(Bucket=remote_media.bucket_name)   # a fresh object store: no bucket
    names = lambda: {b["Name"] for b in remote_media.client.list_buckets()["Buckets"]}  # noqa: E731
    assert remote_media.bucket_name not in names()

    assert f"Created bucket '{remote_media.bucket_name}'" in _run()
    assert remote_media.bucket_name in names()
    assert remote_media.client.head_bucket(Bucket=remote_media.bucket_name)
    assert f"Bucket '{remote_media.bucket_name}' exists." in _run()   # a restart changes nothing


def test_an_unreachable_store_is_named_after_the_wait(remote_media, settings):
    from tests.storage.conftest import _free_port, storage_settings

    url = f"s3://test:test@127.0.0.1:{_free_port()}/nowhere?secure=false&region=us-east-1"
    settings.STORAGES = {**settings.STORAGES, "default": storage_settings(url)}
    with pytest.raises(CommandError, match="does not answer"):
        _run(wait=0)


def test_nothing_to_do_without_storage_url(settings):
    settings.STORAGE_URL = ""
    assert "STORAGE_URL is not set" in _run()
