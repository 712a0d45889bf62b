"""Whole slides with STORAGE_URL set (issue 18): a slide sent by chunked upload and imported lives in the
bucket, the viewer of another host (an empty mirror) serves its tiles, deleting the dataset removes its
objects, and MEDIA_ROOT (empty, read-only: tests/storage/conftest.py) is never written.

The import job runs in this process (no worker), as tests/webapp/slides/test_slide_upload_chunks.py does it."""

from __future__ import annotations

import io
import json

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


def test_a_failed_slide_import_leaves_nothing_in_the_bucket(api_client_for, owner, project, remote_media, tmp_path):
    fixture = build_fixture_slide(tmp_path / "client")
    empty = json.dumps({"type": "FeatureCollection", "features": []}).encode()
    job = register_uploaded(api_client_for(owner), project, fixture.slide.read_bytes(), empty, "no nuclei")
    assert job.state == "failed" and "case 1.geojson" in job.error and "no detections" in job.error, job.error
    assert remote_media.keys() == set()  # neither the staged uploads nor the dataset folder stay
    assert not Dataset.objects.exists() and not Image.objects.exists()
    assert not remote_media.media_root.exists()
