"""A prediction job cancelled halfway leaves the active version with predictions of some images only: the project
page says how many images have none, and its button (the activation's request) queues a job of just those
images. The page said nothing, and making the version active again queued nothing: a dataset with one
predicted nucleus counted as predicted."""

import pytest
from django.test import Client

from mlcore.types import Cancelled
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.datasets.models import Image, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.training import runner
from webapp.training.models import ModelVersion, Prediction
from webapp.training.operations import images_without_predictions
from workers.tasks import run_job

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_the_images_a_cancelled_prediction_left_are_offered_and_predicted(owner, media_root, tmp_path, monkeypatch,
                                                                          api_client_for):
    project = two_taxonomy_project(owner, tmp_path, images=4)
    monkeypatch.setattr(job_operations, "_send", lambda job: None)   # the test runs the jobs itself
    training = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                                  params={"options": {**FAST, "stages": ["sparse"], "predict_tta": False}})
    trained = runner.run_training(training, lambda *args, **details: None, lambda: False)
    version = ModelVersion.objects.get(pk=trained["model_version_id"])
    prediction = Job.objects.get(pk=trained["prediction_job"])
    # Queued by the training, not by its starter (tests/webapp/training/test_predictions_queued_by_a_training.py).
    assert prediction.created_by is None
    assert (prediction.params["reason"], prediction.params["started_by_job"]) == ("training", training.pk)
    images = list(Image.objects.filter(project=project).order_by("id"))
    stored = []
    with pytest.raises(Cancelled):   # the user cancels after three images
        runner.run_prediction(prediction, lambda *args, **details: None, lambda: len(stored.append(1) or stored) == 3)
    Job.objects.filter(pk=prediction.pk).update(state=Job.State.CANCELLED)
    missing = list(images_without_predictions(version))
    assert missing == images[3:] and len(images) == 8

    client = Client()
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="no-predictions"' in page and "has no predictions of 5\n      images" in page
    assert 'class="secondary queue-predictions" data-number="1"' in page

    response = api_client_for(owner).post(f"/api/projects/{project.pk}/versions/1/activate/")
    [job_id] = response.json()["prediction_jobs"]
    from webapp.core.models import AuditLogEntry
    # v1 was active already: the button queues its predictions without an activity row "activated v1 (was v1)".
    assert not AuditLogEntry.objects.filter(action="model.activated").exists()
    assert Job.objects.get(pk=job_id).params == {"model_version": version.pk, "missing": True, "tta": False}
    assert 'id="no-predictions"' not in client.get(f"/projects/{project.pk}/").content.decode()   # queued now
    kept = dict(Prediction.objects.filter(model_version=version, nucleus__image=images[0]).values_list("id", "nucleus"))
    assert run_job(job_id) == "succeeded"
    assert not images_without_predictions(version).exists()
    label_sets = 2
    assert Prediction.objects.filter(model_version=version).count() == \
        label_sets * Nucleus.objects.filter(image__project=project).count()
    # Only the missing images were classified: the first image's predictions are the same rows.
    assert dict(Prediction.objects.filter(model_version=version, nucleus__image=images[0])
                .values_list("id", "nucleus")) == kept
    assert "that had none" in Job.objects.get(pk=job_id).log_tail
