"""webapp.core.media against a real S3 endpoint (moto's server) and on the local disk."""

from __future__ import annotations

import pytest

from webapp.core import media
from webapp.core.storage_url import StorageUrlError, storage_options


def test_storage_url_forms():
    minio = storage_options("s3://minio:se%2Fcret@minio:9000/nucleus/prod?secure=false", {})
    assert minio["endpoint_url"] == "http://minio:9000" and minio["bucket_name"] == "nucleus"
    assert minio["location"] == "prod" and minio["secret_key"] == "se/cret" and minio["access_key"] == "minio"
    aws = storage_options("s3://lab-media", {"AWS_DEFAULT_REGION": "eu-west-1"})
    assert aws["bucket_name"] == "lab-media" and aws["region_name"] == "eu-west-1" and "endpoint_url" not in aws
    assert storage_options("s3://k:s@store.example:443/b", {})["endpoint_url"] == "https://store.example:443"
    for bad, says in (("http://x/b", "s3://"), ("s3://k:s@host:9000", "no bucket"), ("s3://b?colour=red", "colour"),
                      ("s3://key:ab/cd@host:9000/bucket", "not a port number.*percent-encoded"),
                      ("s3://k:s@host:notaport/b", "not a port number"),
                      ("s3://k:s@host:9000/b?secure=nope", "neither true nor false")):
        with pytest.raises(StorageUrlError, match=says) as refused:
            storage_options(bad, {})
        assert "'ab'" not in str(refused.value) and "ab/cd" not in str(refused.value)  # no part of a secret
    assert storage_options("s3://k:s@host:9000/b?secure=off", {})["endpoint_url"] == "http://host:9000"


def test_names_never_leave_the_media_tree():
    for bad in ("/etc/passwd", "../x", "a/../../b", ""):
        with pytest.raises(media.MediaNameError):
            media.clean_name(bad)
    assert media.clean_name("a\\b/c.png") == "a/b/c.png"


def test_publish_read_list_delete_through_the_bucket(remote_media, tmp_path):
    folder = media.work_path("projects/1/models/abc")
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights" * 1000)
    (folder / "sub").mkdir()
    (folder / "sub" / "log.txt").write_text("hello")
    assert media.root() == remote_media.mirror and not remote_media.media_root.exists()

    uploaded = media.publish("projects/1/models/abc")
    assert sorted(uploaded) == ["projects/1/models/abc/model.pt", "projects/1/models/abc/sub/log.txt"]
    assert remote_media.keys() == set(uploaded)
    assert remote_media.read("projects/1/models/abc/sub/log.txt") == b"hello"

    # Another host: an empty mirror downloads on first use, whole.
    media.delete("projects/1/models/abc")          # gone here and in the bucket
    assert remote_media.keys() == set()
    media.work_path("x").parent.mkdir(parents=True, exist_ok=True)
    media.work_path("x").write_bytes(b"x")
    media.publish("x")
    media.work_path("x").unlink()
    assert media.local_path("x").read_bytes() == b"x"
    assert sorted(media.names()) == ["x"]
    with pytest.raises(FileNotFoundError, match="nothing"):
        media.local_path("nothing")
    assert not media.exists("nothing") and media.exists("x")


def test_download_response_redirects_to_a_short_lived_presigned_url(remote_media):
    import urllib.request
    from urllib.parse import parse_qs, urlsplit

    media.work_path("exports/a b.csv").parent.mkdir(parents=True, exist_ok=True)
    media.work_path("exports/a b.csv").write_text("id,class\n1,2\n")
    media.publish("exports/a b.csv")
    response = media.download_response("exports/a b.csv", filename="résumé.csv")
    assert response.status_code == 302
    query = parse_qs(urlsplit(response["Location"]).query)
    assert query["X-Amz-Expires"] == ["120"]
    with urllib.request.urlopen(response["Location"]) as answer:
        assert answer.read() == b"id,class\n1,2\n"
        assert "attachment" in answer.headers["Content-Disposition"]


def test_local_mode_is_media_root_itself(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    media.work_path("a/b.txt").parent.mkdir(parents=True)
    media.work_path("a/b.txt").write_text("b")
    assert media.publish("a") == [] and media.local_path("a/b.txt") == tmp_path / "a" / "b.txt"
    assert list(media.names("a")) == ["a/b.txt"]
    response = media.download_response("a/b.txt")
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"b"
    media.delete("a")
    assert not (tmp_path / "a").exists()


def test_local_folder_downloads_a_whole_prefix(remote_media):
    for name in ("staging/u1/files/a.png", "staging/u1/files/deep/b.npy", "staging/u2/other.txt"):
        media.work_path(name).parent.mkdir(parents=True, exist_ok=True)
        media.work_path(name).write_bytes(name.encode())
        media.publish(name)
    media.delete("staging/u1")
    for name in ("staging/u1/files/a.png", "staging/u1/files/deep/b.npy"):   # put back in the bucket only
        remote_media.client.put_object(Bucket=remote_media.bucket_name, Key=name, Body=name.encode())
    folder = media.local_folder("staging/u1")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        ["files/a.png", "files/deep/b.npy"]
    assert (folder / "files/deep/b.npy").read_bytes() == b"staging/u1/files/deep/b.npy"


def test_health_reports_the_bucket_and_a_store_that_is_down(remote_media, settings, client):
    from django.core.cache import cache

    from tests.storage.conftest import storage_settings
    from webapp.core.health import STORAGE_KEY

    body = client.get("/api/health/").json()
    assert body["storage"] == {"ok": True, "kind": "s3"}
    cache.delete(STORAGE_KEY)
    closed = "s3://test:test@127.0.0.1:1/nothing?secure=false"
    settings.STORAGE_URL, settings.STORAGES = closed, {**settings.STORAGES, "default": storage_settings(closed)}
    response = client.get("/api/health/")
    assert response.status_code == 503
    assert response.json()["storage"] == {"ok": False, "kind": "s3", "error": "unreachable"}
    cache.delete(STORAGE_KEY)


def test_an_inline_file_is_streamed_from_this_origin_not_redirected(remote_media, settings, tmp_path):
    media.work_path("out/overlay.png").parent.mkdir(parents=True, exist_ok=True)
    media.work_path("out/overlay.png").write_bytes(b"\x89PNG...")
    media.publish("out/overlay.png")
    settings.MEDIA_MIRROR = tmp_path / "other-web-host"
    response = media.download_response("out/overlay.png", as_attachment=False, content_type="image/png")
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"\x89PNG..."


def test_the_mirror_is_trimmed_least_recently_used_first_but_never_under_a_running_job(remote_media, settings):
    import os
    import time

    for index, name in enumerate(("a/old.bin", "a/middle.bin", "b/new.bin")):
        media.work_path(name).parent.mkdir(parents=True, exist_ok=True)
        media.work_path(name).write_bytes(bytes(1000))
        media.publish(name)
        os.utime(media.work_path(name), (time.time() - 100 + index, time.time() - 100 + index))
    media.local_path("a/old.bin")                     # used again: now the most recent
    with media.mirror_in_use():                       # a job runs on this host: nothing is removed
        assert media.trim_mirror(1500) == 0
    assert media.trim_mirror(1500) == 2000
    assert sorted(p.relative_to(media.root()).as_posix() for p in media.root().rglob("*.bin")) == ["a/old.bin"]
    assert not (media.root() / "b").exists()          # emptied folders go too
    assert media.local_path("b/new.bin").read_bytes() == bytes(1000)   # downloaded again when needed
    settings.MEDIA_MIRROR_MAX_BYTES = 0
    media.trim_mirror()
    assert list(media.root().rglob("*.bin")) == []
    assert remote_media.keys() == {"a/old.bin", "a/middle.bin", "b/new.bin"}   # the bucket is untouched
