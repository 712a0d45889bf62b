"""Which queues the live workers take: the health answer counts them per queue, and a queued job that no live
worker takes says what to start. Its own module: the health tests' module-wide worker takes both queues."""

from datetime import timedelta

import pytest
from django.utils import timezone

from webapp.core import health


@pytest.mark.slow   # starts a worker process
@pytest.mark.django_db(transaction=True)
def test_a_queue_no_worker_takes_is_reported_and_its_queued_jobs_say_what_to_start(client, api_client_for, owner,
                                                                                  tmp_path):
    """A worker for imports alone (-Q default): trainings stayed queued with no word while the health said ok."""
    from tests.conftest import WorkerProcess
    from webapp.jobs.models import Job
    from webapp.projects.operations import do_create_project

    worker = WorkerProcess(tmp_path / "worker.log", name="default-only", queues="default")
    worker.start()
    try:
        health.forget_workers()
        workers = client.get("/api/health/").json()["workers"]
        assert workers["queues"] == {"default": 1, "gpu": 0} and workers["live"] == 1
        project = do_create_project("queues", actor=owner)
        training = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner)
        export = Job.objects.create(kind=Job.Kind.EXPORT, project=project, created_by=owner)
        api = api_client_for(owner)
        # Just queued, nothing is said (asking the workers may take a second: not for every 202).
        assert api.get(f"/api/jobs/{training.pk}/").json()["waiting"] is None
        Job.objects.filter(pk__in=[training.pk, export.pk]).update(
            created_at=timezone.now() - timedelta(seconds=health.WAITING_AFTER_S + 1))
        waiting = api.get(f"/api/jobs/{training.pk}/").json()["waiting"]
        assert waiting.startswith("No live worker takes trainings, predictions and inferences (the gpu queue)")
        assert "ALLOW_CPU_GPU_QUEUE=1" in waiting
        assert api.get(f"/api/jobs/{export.pk}/").json()["waiting"] is None   # the default queue has a worker
    finally:
        worker.stop()
    health.forget_workers()
    assert client.get("/api/health/").json()["workers"]["queues"] == {"default": 0, "gpu": 0}
