"""An S3 endpoint on loopback (moto's server mode) and a process whose media live in it.

``remote_media`` switches *this* process to ``STORAGE_URL`` mode on a fresh bucket, with MEDIA_ROOT an
empty folder nobody may write: any code path that still touched MEDIA_ROOT fails loudly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import die_with_parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server, one per test session, on a free loopback port."""
    pytest.importorskip("moto", reason="moto[server] is a dev requirement (requirements-dev.txt)")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto's S3 server did not start (see {log.name})") from None
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@dataclass
class RemoteMedia:
    url: str            # the STORAGE_URL of the bucket
    bucket_name: str
    client: object      # a boto3 S3 client on the endpoint
    media_root: Path    # MEDIA_ROOT: a path nothing can be created under (see unusable_folder)
    mirror: Path        # this process's mirror

    def keys(self) -> set[str]:
        keys = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket_name, Key=key)["Body"].read()


def unusable_folder(path: Path) -> Path:
    """A folder path under which nothing can be created, even by root (tests may run as root, for whom
    chmod 555 blocks nothing): its parent is a regular file, so every mkdir or open fails (ENOTDIR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blocker = path.parent / f"{path.name}.is-a-file"
    blocker.write_text("MEDIA_ROOT must not be used with STORAGE_URL set")
    return blocker / "media"


def storage_settings(url: str) -> dict:
    from webapp.core.storage_url import storage_options

    return {"BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {**storage_options(url, {}), "querystring_expire": 120}}


@pytest.fixture
def remote_media(s3_endpoint, settings, tmp_path) -> RemoteMedia:
    import boto3

    bucket = f"media-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    url = f"s3://test:test@{s3_endpoint}/{bucket}?secure=false&region=us-east-1"
    media_root = unusable_folder(tmp_path / "media-root-unused")
    settings.STORAGE_URL = url
    settings.STORAGES = {**settings.STORAGES, "default": storage_settings(url)}
    settings.MEDIA_MIRROR = tmp_path / "mirror"
    settings.MEDIA_ROOT = media_root
    yield RemoteMedia(url, bucket, client, media_root, tmp_path / "mirror")
