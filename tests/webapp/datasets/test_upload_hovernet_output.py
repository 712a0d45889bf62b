"""A lab uploads what HoVer-Net predicted on its tiles (its output folder, mat/ json/ overlay/ qupath/, with the
tiles as Images/ and its type_info.json) as one zip, format left on auto: the dataset imports with HoVer-Net's
classes as a label set, so its predictions reach review to be corrected."""

import io
import json
import zipfile

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from tests.mlcore.test_reader_hovernet_json import TYPE_INFO, as_written, hovernet_json, shapes
from webapp.datasets.models import CurrentLabel, Dataset, Nucleus
from webapp.jobs import operations as job_operations
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


def test_hovernet_output_uploads_as_a_labelled_dataset(api_client_for, owner, settings, tmp_path, monkeypatch):
    from workers.tasks import run_job

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    project = do_create_project("hovernet output", actor=owner)
    instance_map = shapes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for stem, flipped, grey in (("tile_1", instance_map, 190), ("tile_2", instance_map[::-1].copy(), 170)):
            png = io.BytesIO()
            PILImage.fromarray(np.full((*flipped.shape, 3), grey, np.uint8)).save(png, "PNG")
            zipped.writestr(f"hovernet-run/Images/{stem}.png", png.getvalue())
            zipped.writestr(f"hovernet-run/json/{stem}.json",
                            json.dumps(hovernet_json(flipped, {1: 1, 2: 2, 3: 2, 4: 0, 5: 1})))
            zipped.writestr(f"hovernet-run/overlay/{stem}.png", png.getvalue())
        zipped.writestr("hovernet-run/type_info.json", json.dumps(TYPE_INFO))
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/datasets/", {
        "name": "HoVer-Net predictions", "label_set": "pannuke-hovernet",
        "archive": SimpleUploadedFile("hovernet-run.zip", archive.getvalue())}, format="multipart")
    assert response.status_code == 202, response.content
    assert run_job(response.json()["id"]) == "succeeded"
    dataset = Dataset.objects.get(project=project)
    assert dataset.format == "hovernet" and dataset.image_count == 2
    assert list(dataset.label_set.classes.order_by("index").values_list("name", flat=True)) == [
        "neoplastic", "inflammatory"]
    written = len(np.unique(as_written(instance_map))) - 1
    assert Nucleus.objects.filter(image__dataset=dataset).count() == 2 * written
    by_class = sorted(CurrentLabel.objects.filter(nucleus__image__dataset=dataset).values_list(
        "class_index", flat=True))
    assert by_class == [0, 0, 0, 0, 1, 1, 1, 1]   # per tile: types 1 and 5 neoplastic, 2 and 3 inflammatory; 4 none
