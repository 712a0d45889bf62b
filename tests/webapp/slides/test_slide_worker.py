"""A slide registered by path and classified through a real Celery worker (a separate process that reads
SLIDES_ROOT and MEDIA_ROOT from its environment, as in production): the import job, then the slide's
prediction job on the gpu queue, with their progress and results."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_for
from webapp.datasets.models import Image, Nucleus
from webapp.jobs.models import Job
from webapp.projects.slides_folder import do_set_slides_folder
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _finished(job_id: int, worker) -> Job:
    return wait_for(lambda: (job := Job.objects.get(pk=job_id)).finished and job, timeout=120,
                    message=f"job {job_id} to finish; worker log:\n{worker.log()}")


def test_register_and_classify_a_slide_through_the_worker(api_client_for, owner, settings, slides_share, slide_worker):
    from django.utils import timezone

    from mlcore.checkpoint import save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.model import CrossTrainedModel
    from mlcore.types import LabelSet as MLLabelSet
    from tests.webapp.slide_helpers import CLASSES
    from webapp.training.models import ModelVersion, Prediction

    settings.SLIDES_ROOT = slides_share
    project = do_create_project("worker slides", actor=owner)
    do_set_slides_folder(project, "lab")
    client = api_client_for(owner)
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "lab case", "path": "lab/case-1.tif", "detections_path": "lab/case-1.geojson", "label_set": "lab"},
        format="json")
    assert response.status_code == 202, response.content
    job = _finished(response.json()["id"], slide_worker)
    assert job.state == "succeeded", job.error
    image = Image.objects.get(dataset__project=project)
    nuclei = Nucleus.objects.filter(image=image).count()
    assert job.result["nuclei"] == nuclei == image.nucleus_count > 0 and "stored" in job.log_tail

    model = CrossTrainedModel([MLLabelSet("lab", CLASSES)], "small", {"width": 4})
    checkpoint = Path(settings.MEDIA_ROOT) / f"projects/{project.pk}/models/v1.pt"
    save_checkpoint(checkpoint, model, "sparse", 0, True, TrainConfig())
    version = ModelVersion.objects.create(project=project, number=1, data_snapshot_at=timezone.now(), is_active=True,
                                          checkpoint_file=str(checkpoint.relative_to(settings.MEDIA_ROOT)))
    response = client.post(f"/api/projects/{project.pk}/slides/{image.pk}/infer/")
    assert response.status_code == 202, response.content
    job = _finished(response.json()["id"], slide_worker)
    assert job.state == "succeeded", job.error
    assert Prediction.objects.filter(model_version=version, nucleus__image=image).count() == nuclei
    assert job.result["nuclei"] == nuclei and job.result["nuclei_per_s"] > 0
    assert job.progress["nuclei_done"] == nuclei and "nuclei/s" in job.log_tail
