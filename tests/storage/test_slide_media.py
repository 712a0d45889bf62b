"""Whole slides with STORAGE_URL set (issue 18): a slide sent by chunked upload and imported lives in the
bucket, the viewer of another host (an empty mirror) serves its tiles, deleting the dataset removes its
objects, and MEDIA_ROOT (empty, read-only: tests/storage/conftest.py) is never written.

The import job runs in this process (no worker), as tests/webapp/slides/test_slide_upload_chunks.py does it."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.webapp.slide_helpers import build_fixture_slide
from webapp.datasets import slides
from webapp.datasets.models import Dataset, Image, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


@pytest.fixture
def project(owner, remote_media, settings, tmp_path, monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    settings.DATA_DIR = tmp_path / "web-host"  # chunked uploads and the tile cache of this "host"
    slides.forget_open_slides()
    return do_create_project("slides in a bucket", actor=owner)


def upload_whole(client, project, payload: bytes, filename: str, chunk: int) -> str:
    created = client.post(f"/api/projects/{project.pk}/slide-uploads/", {"filename": filename, "size": len(payload)},
                          format="json").json()
    for offset in range(0, len(payload), chunk):
        response = client.generic("PUT", created["url"], payload[offset:offset + chunk],
                                  content_type="application/octet-stream",
                                  HTTP_CONTENT_RANGE=f"bytes {offset}-{offset + len(payload[offset:offset + chunk]) - 1}"
                                                     f"/{len(payload)}")
        assert response.status_code == 200, response.content
    assert response.json()["complete"] is True
    return created["id"]


def register_uploaded(client, project, slide: bytes, detections: bytes, name: str) -> Job:
    from workers.tasks import run_job

    slide_id = upload_whole(client, project, slide, "case 1.tif", chunk=256 * 1024)
    detections_id = upload_whole(client, project, detections, "case 1.geojson", chunk=64 * 1024)
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": name, "slide_upload_id": slide_id, "detections_upload_id": detections_id, "label_set": "qupath"},
        format="json")
    assert response.status_code == 202, response.content
    run_job(response.json()["id"])
    return Job.objects.get(pk=response.json()["id"])


def test_an_uploaded_slide_lives_in_the_bucket_and_any_host_serves_its_tiles(api_client_for, owner, project,
                                                                          remote_media, settings, tmp_path):
    from webapp.datasets.operations import do_delete_dataset

    fixture = build_fixture_slide(tmp_path / "client")
    client = api_client_for(owner)
    job = register_uploaded(client, project, fixture.slide.read_bytes(), fixture.geojson.read_bytes(), "bucket case")
    assert job.state == "succeeded", job.error

    dataset = Dataset.objects.get(project=project)
    image = Image.objects.get(dataset=dataset)
    assert image.slide_root == "media" and image.nucleus_count == len(fixture.boxes)
    # The bucket holds exactly what the rows name, all in the dataset's folder: the staged uploads are gone.
    named = {image.slide_file, image.file, image.thumbnail_file}
    assert remote_media.keys() == named
    assert all(name.startswith(dataset.storage_dir + "/") for name in named)
    assert remote_media.read(image.slide_file) == fixture.slide.read_bytes()
    assert PILImage.open(io.BytesIO(remote_media.read(image.file))).size[0] > 0
    assert not any((settings.DATA_DIR / "uploads" / "slides").iterdir())  # the chunks went into the import

    # Another web host: its mirror and its tile cache are empty; the slide is fetched from the bucket.
    settings.MEDIA_MIRROR = tmp_path / "second-host-mirror"
    settings.DATA_DIR = tmp_path / "second-host"
    slides.forget_open_slides()
    dzi = client.get(f"/api/images/{image.pk}/slide.dzi")
    assert dzi.status_code == 200 and b"TileSize=\"254\"" in dzi.content
    generator = slides.deep_zoom(image).generator
    top = generator.level_count - 1
    tile = client.get(f"/api/images/{image.pk}/slide_files/{top}/0_0.jpeg")
    assert tile.status_code == 200 and tile["Content-Type"] == "image/jpeg"
    pixels = np.asarray(PILImage.open(io.BytesIO(tile.content)).convert("RGB")).astype(int)
    (x, y), _, (w, h) = generator.get_tile_coordinates(top, (0, 0))
    assert np.abs(pixels - fixture.pixels[y:y + h, x:x + w].astype(int)).mean() < 4  # JPEG at quality 80
    assert (settings.MEDIA_MIRROR / image.slide_file).read_bytes() == fixture.slide.read_bytes()
    assert list((settings.DATA_DIR / slides.TILE_CACHE_DIR / str(image.pk)).rglob("0_0.jpeg"))

    do_delete_dataset(dataset)
    assert remote_media.keys() == set() and not Nucleus.objects.exists()
    assert not (settings.DATA_DIR / slides.TILE_CACHE_DIR / str(image.pk)).exists()
    assert not remote_media.media_root.exists()


def test_a_failed_slide_import_keeps_only_its_uploads_in_the_bucket_for_any_web_host(
        api_client_for, owner, project, remote_media, settings, tmp_path):
    """The worker cannot write the web host's disk: the uploads of a failed import are kept in the store,
    under their ids, where a web host (here another one, with an empty DATA_DIR and mirror) finds them."""
    from webapp.datasets.slide_uploads import MAX_AGE
    from webapp.jobs.sweep import sweep_orphans
    from workers.tasks import run_job

    fixture = build_fixture_slide(tmp_path / "client")
    empty = json.dumps({"type": "FeatureCollection", "features": []}).encode()
    client = api_client_for(owner)
    job = register_uploaded(client, project, fixture.slide.read_bytes(), empty, "no nuclei")
    assert job.state == "failed" and "case 1.geojson" in job.error and "no detections" in job.error, job.error
    slide_id, detections_id = (entry["id"] for entry in job.params["chunked_uploads"])
    assert (f"The uploaded slide case 1.tif and detections case 1.geojson are kept as uploads {slide_id} and "
            f"{detections_id} for a day: register again with them") in job.error, job.error
    # Neither the staging nor the dataset folder stay: only the two uploads, each with its upload.json.
    assert remote_media.keys() == {f"slide-uploads/{upload_id}/{file}" for upload_id in (slide_id, detections_id)
                                   for file in ("data", "upload.json")}
    assert remote_media.read(f"slide-uploads/{slide_id}/data") == fixture.slide.read_bytes()
    assert not Dataset.objects.exists() and not Image.objects.exists()
    assert not remote_media.media_root.exists()

    settings.MEDIA_MIRROR = tmp_path / "second-host-mirror"
    settings.DATA_DIR = tmp_path / "second-host"
    url = f"/api/projects/{project.pk}/slide-uploads/{slide_id}/"
    state = client.get(url).json()
    assert state == {**state, "id": slide_id, "filename": "case 1.tif", "complete": True,
                     "offset": fixture.slide.stat().st_size}
    refused = client.generic("PUT", url, b"x", content_type="application/octet-stream",
                             HTTP_CONTENT_RANGE=f"bytes 0-0/{fixture.slide.stat().st_size}")
    assert refused.status_code == 409 and refused.json()["offset"] == fixture.slide.stat().st_size
    assert sweep_orphans() == []  # given back just now

    # Registered again with the same slide upload and detections sent anew: the slide is not sent again.
    fixed_id = upload_whole(client, project, fixture.geojson.read_bytes(), "case 1.geojson", chunk=64 * 1024)
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "second try", "slide_upload_id": slide_id, "detections_upload_id": fixed_id}, format="json")
    assert response.status_code == 202, response.content
    run_job(response.json()["id"])
    job = Job.objects.get(pk=response.json()["id"])
    assert job.state == "succeeded", job.error
    image = Image.objects.get(dataset__name="second try")
    assert image.nucleus_count == len(fixture.boxes)
    assert remote_media.read(image.slide_file) == fixture.slide.read_bytes()
    assert client.get(url).status_code == 404
    kept = {f"slide-uploads/{detections_id}/data", f"slide-uploads/{detections_id}/upload.json"}
    assert remote_media.keys() == {image.slide_file, image.file, image.thumbnail_file} | kept
    # The unused one goes with the sweep, a day after it was given back.
    later = time.time() + MAX_AGE.total_seconds() + 60
    assert f"slide-uploads/{detections_id}" in sweep_orphans(now=later)
    assert not remote_media.keys() & kept
