"""Test-time augmentation in the web app's predictions: on by default for tile images (the project's
prediction job after a training, the "Classify a new image" upload), off by default for a whole slide;
each can be asked for otherwise, and what a job stored is what mlcore predicts with that setting."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone

from mlcore.config import TTA_DEFAULT_SLIDES, TTA_DEFAULT_TILES
from mlcore.predict import predict
from tests.mlcore.helpers import random_model
from tests.workers.training_helpers import two_taxonomy_project
from webapp.datasets.importing import load_mask, load_rgb
from webapp.datasets.models import Image
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.training import operations, runner
from webapp.training.models import ModelVersion, Prediction

pytestmark = pytest.mark.django_db


def quiet(*args, **kwargs):
    pass


@pytest.fixture
def project_with_model(owner, settings, tmp_path, monkeypatch):
    """A two-taxonomy project of generated tiles and an active version: a small model with random weights
    (no training needed to tell one view from eight)."""
    from mlcore.checkpoint import load_checkpoint, save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.types import LabelSet as MLLabelSet

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the jobs itself
    project = two_taxonomy_project(owner, tmp_path / "generated", images=2, nuclei=12)
    label_sets = [MLLabelSet(row.name, tuple(row.class_names)) for row in project.label_sets.all().order_by("id")]
    model = random_model(label_sets)  # seeded: the difference asserted below is the same every run
    path = Path(settings.MEDIA_ROOT) / "models" / "v1.pt"
    save_checkpoint(path, model, "sparse", 0, True, TrainConfig())
    version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                          data_snapshot_at=timezone.now(), is_active=True)
    return project, version, load_checkpoint(path).model.eval()


def stored_probabilities(version, image, label_set_name: str) -> np.ndarray:
    rows = (Prediction.objects.filter(model_version=version, nucleus__image=image, label_set__name=label_set_name)
            .order_by("nucleus__instance_id").values_list("base_probs", flat=True))
    return np.array(list(rows))


def expected_probabilities(model, image, label_set_name: str, tta: bool) -> np.ndarray:
    crops, geometry = model.crop_spec.cut(load_rgb(image), load_mask(image))
    order = np.argsort(geometry.ids)
    return predict(model, crops, tta=tta)[label_set_name].base_probs[order]


def test_the_defaults_are_on_for_tiles_and_off_for_slides():
    # The README's measurement (five seeds, every one ahead on CoNSeP and PanNuke) decided these.
    assert TTA_DEFAULT_TILES is True and TTA_DEFAULT_SLIDES is False


def test_the_project_prediction_job_classifies_tiles_with_tta_unless_told_not_to(project_with_model, owner):
    project, version, model = project_with_model
    image = Image.objects.filter(project=project).order_by("id").first()
    name = project.label_sets.order_by("id").first().name

    job = operations.do_start_prediction(version, actor=owner)  # what a training starts when it publishes
    assert job.params["tta"] is True
    result = runner.run_prediction(job, quiet, lambda: False)
    assert result["tta"] is True and result["predictions"] > 0
    with_tta = stored_probabilities(version, image, name)
    # Stored rounded to 5 decimals.
    np.testing.assert_allclose(with_tta, expected_probabilities(model, image, name, tta=True), atol=2e-5)

    job = operations.do_start_prediction(version, actor=owner, tta=False)
    assert runner.run_prediction(job, quiet, lambda: False)["tta"] is False
    one_view = stored_probabilities(version, image, name)
    np.testing.assert_allclose(one_view, expected_probabilities(model, image, name, tta=False), atol=2e-5)
    assert np.abs(one_view - with_tta).max() > 1e-4  # the two settings gave different predictions (near-round
    # generated nuclei look alike in every view, so the difference is small, but 20 times the rounding)


def test_a_prediction_job_queued_before_the_setting_existed_gets_the_default(project_with_model, owner):
    project, version, model = project_with_model
    job = Job.objects.create(kind=Job.Kind.PREDICT, project=project, created_by=owner,
                             params={"model_version": version.pk})
    assert runner.run_prediction(job, quiet, lambda: False)["tta"] is TTA_DEFAULT_TILES


def _inference_files(image):
    from webapp.core import media

    png = io.BytesIO(media.local_path(image.file).read_bytes())
    mask = io.BytesIO(media.local_path(image.mask_file).read_bytes())
    png.name, mask.name = "new tile.png", f"new tile-mask{Path(image.mask_file).suffix}"
    return png, mask


@pytest.mark.parametrize("sent, expected", [(None, True), ("false", False), ("true", True)])
def test_the_inference_upload_takes_tta_and_defaults_to_on(project_with_model, owner, api_client_for, settings,
                                                          sent, expected):
    project, version, model = project_with_model
    image = Image.objects.filter(project=project).order_by("id").first()
    png, mask = _inference_files(image)
    body = {"image": png, "mask": mask, **({"tta": sent} if sent is not None else {})}
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/infer/", body, format="multipart")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.params["tta"] is expected
    logs = []
    result = runner.run_inference(job, lambda percent, log=None, **details: logs.append(log) if log else None,
                                  lambda: False)
    assert result["tta"] is expected and result["nuclei"] == image.nuclei.count()
    # The log says which it was, naming the image as it was uploaded.
    views = "test-time augmentation" if expected else "one view per nucleus"
    assert any(f"{result['nuclei']} nuclei of new tile.png classified by model v{version.number} ({views}"
               in line for line in logs), logs


def test_a_bad_tta_value_is_refused_by_name(project_with_model, owner, api_client_for, settings):
    project, version, model = project_with_model
    image = Image.objects.filter(project=project).order_by("id").first()
    png, mask = _inference_files(image)
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/infer/",
                                          {"image": png, "mask": mask, "tta": "sometimes"}, format="multipart")
    assert response.status_code == 400
    assert "tta" in response.json() or "tta" in response.json().get("detail", "")
    assert not Job.objects.filter(kind=Job.Kind.INFER).exists()


def test_files_the_inference_job_would_fail_on_are_refused_at_once_naming_them(project_with_model, owner,
                                                                              api_client_for, settings):
    """A JPEG mask, a photograph as the mask, a mask of another size, a file that is no image: each was accepted
    (202) and failed in the worker a moment later; now the request's 400 names the file, and nothing is kept."""
    import cv2
    import numpy as np

    project, version, model = project_with_model
    image = Image.objects.filter(project=project).order_by("id").first()
    png, mask = _inference_files(image)
    height, width = image.height, image.width
    photo = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    jpeg = io.BytesIO(cv2.imencode(".jpg", photo)[1].tobytes())
    jpeg.name = "mask.jpg"
    photo_png = io.BytesIO(cv2.imencode(".png", photo)[1].tobytes())
    photo_png.name = "photo.png"
    small = io.BytesIO()
    np.save(small, np.zeros((height // 2, width), np.int32))
    small.name = "small.npy"
    not_image = io.BytesIO(b'{"classes": []}')
    not_image.name = "classes.json"
    client = api_client_for(owner)
    for body, field, words in (
            ({"image": png, "mask": jpeg}, "mask", "mask.jpg: a JPEG cannot hold an instance map"),
            ({"image": png, "mask": photo_png}, "mask", "photo.png: "),
            ({"image": png, "mask": small}, "mask", "small.npy: mask size"),
            ({"image": not_image, "mask": mask}, "image", "classes.json: not an image")):
        for upload in body.values():
            upload.seek(0)
        response = client.post(f"/api/projects/{project.pk}/infer/", body, format="multipart")
        assert response.status_code == 400, (field, response.content)
        detail = response.json()["detail"]
        assert detail.startswith(f"{field}: {words}"), detail
        assert str(settings.MEDIA_ROOT) not in detail
    assert not Job.objects.filter(kind=Job.Kind.INFER).exists()
    assert not list((Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/inference").glob("*"))


def test_inference_without_a_model_is_a_conflict_like_a_slides(project_with_model, owner, api_client_for):
    """It was 404, which reads as "no such project" (a slide's classification said 400)."""
    from webapp.projects.operations import do_create_project

    project, version, model = project_with_model
    png, mask = _inference_files(Image.objects.filter(project=project).order_by("id").first())
    empty = do_create_project("no model", actor=owner)
    response = api_client_for(owner).post(f"/api/projects/{empty.pk}/infer/", {"image": png, "mask": mask},
                                          format="multipart")
    assert response.status_code == 409 and response.json()["detail"].endswith("train one first.")


def test_an_inference_upload_over_the_limit_is_stopped_as_it_arrives(project_with_model, owner, api_client_for,
                                                                    settings):
    """The "Classify a new image" upload has the datasets' limit (MAX_UPLOAD_BYTES): it was unbounded."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    project, version, model = project_with_model
    settings.MAX_UPLOAD_BYTES = 1_000_000
    image = Image.objects.filter(project=project).order_by("id").first()
    png, mask = _inference_files(image)
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/infer/",
                                          {"mask": mask, "image": SimpleUploadedFile("scan.tif", bytes(3_000_000))},
                                          format="multipart")
    assert response.status_code == 413, response.content
    assert list(response.json()["errors"]) == ["image"]
    assert response.json()["errors"]["image"][0].startswith(
        "scan.tif: the files of this upload are over the limit of 1.0 MB (MAX_UPLOAD_BYTES), and it was refused as it "
        "arrived; register an image that large as a slide")
    assert not Job.objects.filter(kind=Job.Kind.INFER).exists()
