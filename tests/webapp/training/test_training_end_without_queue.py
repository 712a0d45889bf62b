"""A training whose last step, queueing the new version's predictions, meets the task queue out of reach: the
version is published, so the training succeeds and says so; it failed with "Nothing was saved" while its version
was active without a prediction. The project page then offers to queue them."""

import pytest
from django.test import Client

from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion
from webapp.training.operations import do_start_training
from workers.tasks import run_job

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_a_training_ends_published_when_its_predictions_cannot_be_queued(owner, media_root, tmp_path, monkeypatch,
                                                                        api_client_for):
    project = two_taxonomy_project(owner, tmp_path)
    monkeypatch.setattr(job_operations, "_send", lambda job: None)   # the test runs jobs itself
    job = do_start_training(project, actor=owner, options={**FAST, "stages": ["sparse"]})
    monkeypatch.setattr(job_operations, "broker_reachable", lambda: False)   # Redis goes as the training ends
    assert run_job(job.pk) == "succeeded", Job.objects.get(pk=job.pk).error
    job.refresh_from_db()
    version = ModelVersion.objects.get(project=project)
    assert version.is_active and job.result["model_version"] == 1 and job.result["prediction_job"] is None
    assert "published v1; its predictions could not be queued (The task queue (Redis) is unreachable" \
        in job.log_tail, job.log_tail
    assert not Job.objects.filter(project=project, kind=Job.Kind.PREDICT).exists()

    client = Client()
    client.force_login(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="no-predictions"' in page and 'class="secondary queue-predictions" data-number="1"' in page

    monkeypatch.setattr(job_operations, "broker_reachable", lambda: True)   # back: the button's request
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/versions/1/activate/")
    assert response.status_code == 200 and len(response.json()["prediction_jobs"]) == 1   # of every image
    assert 'id="no-predictions"' not in client.get(f"/projects/{project.pk}/").content.decode()
