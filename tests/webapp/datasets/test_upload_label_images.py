"""A lab's own tiles segmented by cellpose (masks/<stem>_cp_masks.png) upload as one zip, format left on auto:
unchecked Labelled, they import as nuclei without classes; left checked, the job says to uncheck it."""

import io
import zipfile

import cv2
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from tests.mlcore.test_reader_label_images import instance_map
from webapp.datasets.models import Dataset, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


def cellpose_zip() -> tuple[bytes, int]:
    archive, nuclei = io.BytesIO(), 0
    with zipfile.ZipFile(archive, "w") as zipped:
        for k in range(2):
            labels = instance_map(10 + k).astype(np.uint16)
            nuclei += len(np.unique(labels)) - 1
            png = io.BytesIO()
            PILImage.fromarray(np.full((*labels.shape, 3), 150 + 20 * k, np.uint8)).save(png, "PNG")
            zipped.writestr(f"my tiles/images/tile_{k}.png", png.getvalue())
            zipped.writestr(f"my tiles/masks/tile_{k}_cp_masks.png", cv2.imencode(".png", labels)[1].tobytes())
    return archive.getvalue(), nuclei


def test_cellpose_masks_upload_as_nuclei_without_classes(api_client_for, owner, settings, tmp_path, monkeypatch):
    from workers.tasks import run_job

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    project = do_create_project("own tiles", actor=owner)
    client = api_client_for(owner)
    data, nuclei = cellpose_zip()

    labelled = client.post(f"/api/projects/{project.pk}/datasets/", {
        "name": "segmented", "archive": SimpleUploadedFile("tiles.zip", data)}, format="multipart")
    assert run_job(labelled.json()["id"]) == "failed"
    error = Job.objects.get(pk=labelled.json()["id"]).error
    assert error.startswith("classes.json: classes.json not found, so no class names: to import the nuclei "
                            "without classes, uncheck Labelled"), error

    response = client.post(f"/api/projects/{project.pk}/datasets/", {
        "name": "segmented", "labelled": "false", "archive": SimpleUploadedFile("tiles.zip", data)},
        format="multipart")
    assert run_job(response.json()["id"]) == "succeeded"
    dataset = Dataset.objects.get(project=project)
    assert (dataset.format, dataset.label_set, dataset.image_count) == ("seed", None, 2)
    assert Nucleus.objects.filter(image__dataset=dataset).count() == nuclei
