"""A tile import says what the reader left out: GeoJSON features are numbered in file order and the later one
wins where they overlap, so a feature wholly covered by later ones keeps no pixel, nor does one wholly outside
its image. Those were dropped without a word (4,000 detections imported as 3,950 nuclei, and no way to tell
why); the job's log and result now count them by reason and the log names the images."""

import io
import json
import zipfile

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from webapp.datasets.models import Dataset, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


def _polygon(x0, y0, x1, y1):
    """A QuPath detection of the pixels x0..x1-1, y0..y1-1 (pixel-edge coordinates, outer ring counter-clockwise)."""
    ring = [[x0, y0], [x0, y1], [x1, y1], [x1, y0], [x0, y0]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": [200, 0, 0]}}}


def _tiles_zip(tiles: dict[str, list[dict]]) -> bytes:
    """A zip of QuPath tiles as a curator exports them: ``<stem>.png`` (40 x 40) and ``<stem>.geojson`` each."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for number, (stem, features) in enumerate(tiles.items()):
            png = io.BytesIO()
            PILImage.fromarray(np.full((40, 40, 3), 150 + 10 * number, np.uint8)).save(png, "PNG")
            zipped.writestr(f"tiles/images/{stem}.png", png.getvalue())
            zipped.writestr(f"tiles/{stem}.geojson", json.dumps({"type": "FeatureCollection", "features": features}))
    return archive.getvalue()


def test_a_geojson_import_counts_the_features_it_left_out_in_its_log_and_result(api_client_for, owner, client,
                                                                               settings, tmp_path, monkeypatch):
    from workers.tasks import run_job

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_PROCESSES = 2   # the counts come back from the worker processes with the prepared images
    monkeypatch.setattr(job_operations, "_send", lambda job: None)   # the test runs the job itself
    project = do_create_project("left out", actor=owner)
    archive = _tiles_zip({
        "tile_a": [_polygon(2, 2, 6, 6),            # wholly covered by the next one
                   _polygon(0, 0, 10, 10), _polygon(20, 20, 30, 30)],
        "tile_b": [_polygon(5, 5, 12, 12),
                   _polygon(50, 10, 60, 20),        # right of the 40 x 40 tile
                   _polygon(10, 45, 20, 55)],       # below it
        "tile_c": [_polygon(1, 1, 9, 9)],
    })
    api = api_client_for(owner)
    response = api.post(f"/api/projects/{project.pk}/datasets/", {
        "name": "detections", "format": "geojson",
        "archive": SimpleUploadedFile("tiles.zip", archive)}, format="multipart")
    assert response.status_code == 202, response.content
    assert run_job(response.json()["id"]) == "succeeded", Job.objects.get(pk=response.json()["id"]).error

    job = Job.objects.get(pk=response.json()["id"])
    dataset = Dataset.objects.get(project=project)
    assert dataset.nucleus_count == Nucleus.objects.filter(image__dataset=dataset).count() == 7 - 3
    assert job.result["nuclei"] == 4 and job.result["left_out"] == {"covered": 1, "outside": 2}
    line = ("3 features left out: 1 wholly covered by later ones, 2 wholly outside the image "
            "(in 2 images: 'tile_b' 2, 'tile_a' 1)")
    assert line in job.log_tail.splitlines(), job.log_tail
    # Where the outcome is shown: the job's API answer (the upload card reads its result and log) and its page.
    answer = api.get(f"/api/jobs/{job.pk}/").json()
    assert answer["result"]["left_out"] == {"covered": 1, "outside": 2} and line in answer["log_tail"]
    client.force_login(owner)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "3 features left out: 1 wholly covered by later ones, 2 wholly outside the image" in page


def test_an_import_that_leaves_nothing_out_says_nothing_of_it(api_client_for, owner, settings, tmp_path, monkeypatch):
    from workers.tasks import run_job

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)
    project = do_create_project("nothing left out", actor=owner)
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/", {
        "name": "detections", "format": "auto",
        "archive": SimpleUploadedFile("tiles.zip", _tiles_zip({"t": [_polygon(0, 0, 8, 8), _polygon(8, 0, 16, 8)]}))},
        format="multipart")
    assert run_job(response.json()["id"]) == "succeeded"
    job = Job.objects.get(pk=response.json()["id"])
    assert job.result["nuclei"] == 2 and job.result["left_out"] == {}
    assert "left out" not in job.log_tail, job.log_tail
