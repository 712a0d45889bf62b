"""A job submitted through the API is executed by a real Celery worker and its result recorded."""

import os

import pytest

from tests.conftest import wait_for
from webapp.jobs.models import Job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


@pytest.fixture
def owner(make_user):
    """Worker diagnostics are for staff (webapp.core.policy): here the one who submits them is staff."""
    return make_user("owner", is_staff=True)


def test_job_submitted_through_the_api_runs_on_a_real_worker(owner, api_client_for, celery_worker_process):
    client = api_client_for(owner)
    response = client.post("/api/jobs/", {"kind": "diagnostics"}, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert response.json()["state"] == "queued"

    job = wait_for(lambda: Job.objects.filter(pk=job_id, state__in=Job.FINISHED_STATES).first(), timeout=90,
                   message=f"job {job_id} to finish\n{celery_worker_process.log()}")
    assert job.state == Job.State.SUCCEEDED, job.error
    assert job.result["worker_pid"] != os.getpid()  # ran in the worker process, not in-process eagerly
    assert job.result["torch"].startswith("2.13")
    assert job.worker == celery_worker_process.name
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at

    body = client.get(f"/api/jobs/{job_id}/").json()
    assert body["state"] == "succeeded" and body["progress"]["percent"] == 100.0

    from webapp.core.models import AuditLogEntry
    actions = list(AuditLogEntry.objects.filter(target=f"jobs.job:{job_id}").values_list("action", flat=True))
    assert sorted(actions) == ["job.enqueued", "job.started", "job.succeeded"]


def test_other_users_cannot_see_a_job(owner, outsider, api_client_for, celery_worker_process):
    job_id = api_client_for(owner).post("/api/jobs/", {"kind": "diagnostics"}, format="json").json()["id"]
    response = api_client_for(outsider).get(f"/api/jobs/{job_id}/")
    assert response.status_code == 404
    assert response.json()["detail"]
    # Let the worker finish it: the test database is flushed (TRUNCATE) after the test, and a worker still
    # writing the job's state would deadlock with it.
    wait_for(lambda: Job.objects.filter(pk=job_id, state__in=Job.FINISHED_STATES).exists(), timeout=90,
             message=f"job {job_id} to finish\n{celery_worker_process.log()}")


def test_unknown_job_kind_is_a_clear_error(owner, api_client_for):
    response = api_client_for(owner).post("/api/jobs/", {"kind": "mine-bitcoin"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("kind:")
    assert not Job.objects.exists()


def test_starting_a_job_without_redis_answers_503_and_saves_nothing(owner, api_client_for):
    from workers.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # a real connection attempt to a closed port
    try:
        response = api_client_for(owner).post("/api/jobs/", {"kind": "diagnostics"}, format="json")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    assert "Redis" in response.json()["detail"]
    assert not Job.objects.exists()
