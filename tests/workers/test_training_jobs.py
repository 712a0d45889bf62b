"""Training from API call to published version and stored predictions, on a real worker."""

import json

import numpy as np
import pytest
import torch
from django.conf import settings
from django.test import Client

from mlcore.uncertainty import js_divergence
from tests.conftest import wait_for
from tests.mlcore.helpers import assert_report_is_its_confusion
from tests.webapp.dataset_helpers import wait_job
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.datasets.models import Nucleus
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion, Prediction

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def test_training_publishes_a_version_and_predictions(owner, api_client_for, celery_worker_process, tmp_path):
    project = two_taxonomy_project(owner, tmp_path)
    client = api_client_for(owner)
    response = client.post(f"/api/projects/{project.pk}/train/", FAST, format="json")
    assert response.status_code == 202, response.content
    job = wait_job(response.json()["id"], celery_worker_process, timeout=300)
    assert job.state == "succeeded", job.error + celery_worker_process.log()

    version = ModelVersion.objects.get(project=project)
    assert version.number == 1 and version.is_active and version.parent is None
    assert [s["name"] for s in version.label_sets] == ["colon", "breast"]
    assert version.trained_on["colon"]["ground_truth"] == 4 * 30
    assert version.trained_on["breast"]["ground_truth"] == 4 * 30
    # "auto" on this CPU worker became the small net; the version says so, on its page too.
    assert version.config["backbone"] == "auto" and version.training_data["backbone"]["name"] == "small"
    browser = Client()
    browser.force_login(owner)
    page = browser.get(f"/projects/{project.pk}/versions/1/")
    assert page.status_code == 200 and "auto (built: small)" in page.content.decode()
    for name in ("colon", "breast"):
        metrics = version.metrics[name]
        assert_report_is_its_confusion(metrics)   # the figures shown are the ones its predictions give
        assert len(metrics["confusion"]) == len(next(s for s in version.label_sets if s["name"] == name)["classes"])

    prediction_job = wait_job(job.result["prediction_job"], celery_worker_process)
    assert prediction_job.state == "succeeded", prediction_job.error
    nuclei = Nucleus.objects.filter(image__project=project).count()
    assert Prediction.objects.filter(model_version=version).count() == nuclei * 2  # every nucleus, every set
    sample = Prediction.objects.filter(model_version=version, label_set__name="breast").first()
    assert len(sample.base_probs) == 3 and len(sample.mlp_probs) == 3
    assert abs(sum(sample.base_probs) - 1) < 1e-3
    assert sample.least_confidence == pytest.approx(1 - sample.probability)
    assert sample.disagreement == pytest.approx(  # the two branches' divergence, from the stored (rounded) probs
        js_divergence(np.array([sample.base_probs]), np.array([sample.mlp_probs]))[0], abs=1e-3)

    versions = client.get(f"/api/projects/{project.pk}/versions/").json()
    assert [v["number"] for v in versions] == [1]
    checkpoint = client.get(versions[0]["checkpoint_url"])
    assert checkpoint.status_code == 200 and int(checkpoint["Content-Length"]) > 1000
    # Neither the version's settings nor its checkpoint carry the worker's crop cache folder (a server path).
    assert "cache_dir" not in versions[0]["config"] and "cache_dir" not in version.config
    downloaded = tmp_path / "v1.pt"
    downloaded.write_bytes(b"".join(checkpoint.streaming_content) if checkpoint.streaming else checkpoint.content)
    assert "cache_dir" not in torch.load(downloaded, map_location="cpu", weights_only=False)["config"]
    assert str(settings.MEDIA_ROOT) not in json.dumps(versions)

    # A second training fine-tunes from the active version, and rollback switches back.
    second = wait_job(client.post(f"/api/projects/{project.pk}/train/", {**FAST, "stages": ["sparse"]},
                                  format="json").json()["id"], celery_worker_process, timeout=300)
    assert second.state == "succeeded", second.error
    v2 = ModelVersion.objects.get(project=project, number=2)
    assert v2.parent == version and v2.is_active
    response = client.post(f"/api/projects/{project.pk}/versions/1/activate/")
    assert response.status_code == 200
    assert ModelVersion.objects.get(project=project, is_active=True).number == 1
    wait_job(second.result["prediction_job"], celery_worker_process)


def test_second_concurrent_training_gets_409(owner, api_client_for, celery_worker_process, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2)
    client = api_client_for(owner)
    first = client.post(f"/api/projects/{project.pk}/train/", {"epochs": 50}, format="json")
    assert first.status_code == 202
    second = client.post(f"/api/projects/{project.pk}/train/", FAST, format="json")
    assert second.status_code == 409
    assert second.json()["job_id"] == first.json()["id"]
    assert "already training" in second.json()["detail"]
    client.post(f"/api/jobs/{first.json()['id']}/cancel/")
    assert wait_job(first.json()["id"], celery_worker_process).state == "cancelled"


def test_cancel_stops_training_and_publishes_nothing(owner, api_client_for, celery_worker_process, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2)
    client = api_client_for(owner)
    job_id = client.post(f"/api/projects/{project.pk}/train/", {"epochs": 200}, format="json").json()["id"]
    wait_for(lambda: Job.objects.get(pk=job_id).progress.get("stage") == "sparse", timeout=120,
             message="training to start its first stage")
    response = client.post(f"/api/jobs/{job_id}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    job = wait_job(job_id, celery_worker_process, timeout=60)
    assert job.state == "cancelled"
    assert not ModelVersion.objects.filter(project=project).exists()
    # Its log ends saying so (its last line was the step it was at).
    assert job.log_tail.splitlines()[-1].startswith("cancelled at ") and "as asked" in job.log_tail


def test_viewer_cannot_train_and_outsider_gets_404(owner, member, outsider, api_client_for, tmp_path):
    from webapp.projects.operations import do_set_membership

    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=5)
    do_set_membership(project, member, "viewer", actor=owner)
    assert api_client_for(member).post(f"/api/projects/{project.pk}/train/", {}, format="json").status_code == 403
    assert api_client_for(outsider).post(f"/api/projects/{project.pk}/train/", {}, format="json").status_code == 404
    assert api_client_for(outsider).get(f"/api/projects/{project.pk}/versions/").status_code == 404
    assert not Job.objects.filter(kind="train").exists()


def test_training_without_redis_answers_503(owner, api_client_for, tmp_path):
    from workers.celery import app

    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=5)
    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = api_client_for(owner).post(f"/api/projects/{project.pk}/train/", FAST, format="json")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503 and "Redis" in response.json()["detail"]
    assert not Job.objects.filter(kind="train").exists()
    # Pages that do not need Redis keep working.
    from django.test import Client
    browser = Client()
    browser.force_login(owner)
    assert browser.get("/").status_code == 200
