"""A job whose worker died is ended, whatever the name of the worker that comes back.

Liveness is asked of the workers themselves (which task ids they hold), never judged by a node name: a
worker restarted under the old name must not keep a dead job "running" (a running training also blocks
every new one with 409).
"""

import os
import signal
import uuid
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from tests.conftest import wait_for
from tests.webapp.dataset_helpers import wait_job
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs.models import Job
from webapp.jobs.operations import do_reap_lost_jobs
from workers.tasks import reap_lost_jobs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

LONG_TRAINING = {"epochs": 40, "stages": ["sparse"], "samples_per_epoch": 256, "batch_size": 32}


def running_job(owner, *, seconds_silent: float, **fields) -> Job:
    """A job row as a worker leaves it: running, with a task id no live worker holds."""
    from webapp.projects.models import Project
    from webapp.projects.operations import do_create_project

    project = Project.objects.filter(name="lost jobs").first() or do_create_project("lost jobs", actor=owner)
    return Job.objects.create(kind="train", state="running", worker="local@this-host", created_by=owner,
                              project=project,
                              celery_task_id=str(uuid.uuid4()), progress={"percent": 42.0},
                              heartbeat_at=timezone.now() - timedelta(seconds=seconds_silent), **fields)


def start_training(client, project) -> int:
    response = client.post(f"/api/projects/{project.pk}/train/", LONG_TRAINING, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    wait_for(lambda: Job.objects.get(pk=job_id).progress.get("stage") == "sparse", timeout=120,
             message="training to be under way")
    return job_id


def test_lost_jobs_are_ended_and_held_ones_are_not(owner, api_client_for, celery_worker_process, tmp_path):
    lost = running_job(owner, seconds_silent=600)
    lost_cancelling = running_job(owner, seconds_silent=600, cancel_requested=True)
    quiet_but_recent = running_job(owner, seconds_silent=2)

    # A real training held by the live worker, silent for long (as in a long step without progress): kept.
    project = two_taxonomy_project(owner, tmp_path, images=2)
    client = api_client_for(owner)
    held_id = start_training(client, project)
    Job.objects.filter(pk=held_id).update(heartbeat_at=timezone.now() - timedelta(minutes=30))

    assert reap_lost_jobs() == 2
    for job in (lost, lost_cancelling, quiet_but_recent):
        job.refresh_from_db()
    assert lost.state == "failed" and "stopped at 42%" in lost.error and "Start it again" in lost.error
    assert lost_cancelling.state == "cancelled" and lost_cancelling.error == ""
    assert quiet_but_recent.state == "running"
    assert Job.objects.get(pk=held_id).state == "running"

    client.post(f"/api/jobs/{held_id}/cancel/")
    assert wait_job(held_id, celery_worker_process).state == "cancelled"


def test_cancelling_a_job_whose_worker_is_gone_ends_it_at_once(owner, api_client_for, celery_worker_process):
    orphan = running_job(owner, seconds_silent=12)  # killed a moment ago: not yet reaped
    response = api_client_for(owner).post(f"/api/jobs/{orphan.pk}/cancel/")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "cancelled"
    orphan.refresh_from_db()
    assert orphan.state == "cancelled" and orphan.finished_at is not None

    # One that reported a moment ago is being worked on (here, nowhere): the cancel is only requested.
    reporting = running_job(owner, seconds_silent=1)
    assert api_client_for(owner).post(f"/api/jobs/{reporting.pk}/cancel/").json()["state"] == "running"
    reporting.refresh_from_db()
    assert reporting.cancel_requested and reporting.state == "running"


def test_whole_worker_killed_then_restarted_under_the_same_name(owner, api_client_for, celery_worker_process,
                                                                 tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=2)
    client = api_client_for(owner)
    job_id = start_training(client, project)
    worker = psutil.Process(celery_worker_process.proc.pid)
    for process in [*worker.children(recursive=True), worker]:
        os.kill(process.pid, signal.SIGKILL)  # the machine lost the worker: no clean-up code runs
    celery_worker_process.proc.wait()

    celery_worker_process.start()  # the same node name as the killed one
    job = Job.objects.get(pk=job_id)
    assert job.state == "running" and job.worker == celery_worker_process.name
    assert client.post(f"/api/projects/{project.pk}/train/", LONG_TRAINING,
                       format="json").status_code == 409  # the dead training still blocks a new one

    # What beat does every 15 s, once the job has been silent past the limit.
    Job.objects.filter(pk=job_id).update(heartbeat_at=timezone.now() - timedelta(minutes=1))
    assert [job.pk for job in do_reap_lost_jobs()] == [job_id]
    job.refresh_from_db()
    assert job.state == "failed" and "worker running this job stopped" in job.error

    response = client.post(f"/api/projects/{project.pk}/train/", LONG_TRAINING, format="json")
    assert response.status_code == 202, response.content
    client.post(f"/api/jobs/{response.json()['id']}/cancel/")
    assert wait_job(response.json()["id"], celery_worker_process).state == "cancelled"
