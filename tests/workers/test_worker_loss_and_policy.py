"""A lost pool process: its job is retried once, then given up (one outcome per scenario); the retraining
policy fires once per threshold crossing."""

import os
import signal

import numpy as np
import psutil
import pytest

from tests.conftest import wait_for
from tests.webapp.dataset_helpers import wait_job
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.datasets.models import LabelSet, Nucleus
from webapp.datasets.operations import do_record_label
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion
from webapp.projects.operations import do_create_project
from workers.tasks import MAX_ATTEMPTS, check_retrain, run_job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.celery_worker
def test_a_training_whose_pool_process_is_killed_is_delivered_again_and_succeeds(owner, api_client_for,
                                                                                 celery_worker_process, tmp_path):
    """The first loss: the worker's main process survives and sees its child die, so the task is rejected
    back to the queue (acks_late, reject_on_worker_lost); the new child starts attempt 2 (under
    MAX_ATTEMPTS) and runs it to the end. The reaper plays no part: no beat runs here, and the job is
    never silent long enough."""
    project = two_taxonomy_project(owner, tmp_path, images=2)
    client = api_client_for(owner)
    # Short epochs: long enough to be killed mid-run, short enough to finish on a busy machine once retried.
    options = {"epochs": 8, "stages": ["sparse"], "samples_per_epoch": 256, "batch_size": 32}
    job_id = client.post(f"/api/projects/{project.pk}/train/", options,
                         format="json").json()["id"]
    wait_for(lambda: Job.objects.get(pk=job_id).progress.get("stage") == "sparse", timeout=120,
             message="training to be under way")
    children = psutil.Process(celery_worker_process.proc.pid).children()
    assert children, "the prefork pool has a child process running the task"
    for child in children:
        os.kill(child.pid, signal.SIGKILL)  # the machine lost the process: no cleanup code runs

    job = wait_job(job_id, celery_worker_process, timeout=300)
    assert (job.state, job.attempts) == ("succeeded", 2), f"{job.state}: {job.error}\n{celery_worker_process.log()}"
    assert ModelVersion.objects.filter(project=project).count() == 1
    # The new version's predictions are a job of their own: it must end before the teardown empties the database
    # (on a busy machine it was still writing Prediction rows there, and the flush failed on their foreign keys).
    assert wait_job(job.result["prediction_job"], celery_worker_process).state == "succeeded"
    celery_worker_process.wait_ready()


@pytest.mark.django_db  # runs in this process: no worker, no transaction to see from another one
def test_a_job_delivered_again_after_its_last_allowed_attempt_was_lost_fails_without_running(owner):
    """The second loss: a job still "running" with MAX_ATTEMPTS attempts when its message comes back
    fails at once, naming the losses, and its handler never runs again (no third attempt)."""
    project = do_create_project("lost twice", actor=owner)
    job = Job.objects.create(kind="train", state=Job.State.RUNNING, project=project, attempts=MAX_ATTEMPTS,
                             params={"epochs": 1, "stages": ["sparse"]})

    assert run_job.apply(args=[job.pk]).get() == "failed"

    job.refresh_from_db()
    assert (job.state, job.attempts) == ("failed", MAX_ATTEMPTS)
    assert job.error == f"the worker running this job was lost {MAX_ATTEMPTS} times; giving up"
    assert job.finished_at is not None
    assert not ModelVersion.objects.filter(project=project).exists()


@pytest.mark.celery_worker
def test_retraining_policy_triggers_exactly_once_when_the_threshold_is_crossed(owner, api_client_for,
                                                                                celery_worker_process, tmp_path):
    from django_celery_beat.models import PeriodicTask

    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=10)
    response = api_client_for(owner).put(f"/api/projects/{project.pk}/retrain-policy/",
                                         {"min_new_reviews": 2, "options": FAST}, format="json")
    assert response.status_code == 200, response.content
    task = PeriodicTask.objects.get(name=f"retrain-check-project-{project.pk}")
    assert task.task == "workers.tasks.check_retrain" and task.interval.every == 15 and task.enabled

    breast = LabelSet.objects.get(project=project, name="breast")
    colon_nuclei = list(Nucleus.objects.filter(image__dataset__name="colon").order_by("id")[:3])
    do_record_label(colon_nuclei[0], breast, 1, author=owner)
    assert check_retrain(project.pk) is None  # 1 new review < 2
    do_record_label(colon_nuclei[1], breast, 2, author=owner)
    job_id = check_retrain(project.pk)
    assert job_id is not None
    assert check_retrain(project.pk) is None  # the training is queued or running: not twice
    assert Job.objects.filter(project=project, kind="train").count() == 1

    job = wait_job(job_id, celery_worker_process, timeout=300)
    assert job.state == "succeeded", job.error
    version = ModelVersion.objects.get(project=project)
    assert version.trained_on["breast"]["review"] == 2  # reviews of colon nuclei became breast supervision
    assert check_retrain(project.pk) is None  # the new version consumed those reviews
    wait_job(job.result["prediction_job"], celery_worker_process)


@pytest.mark.celery_worker
def test_inference_on_a_new_image(owner, api_client_for, celery_worker_process, tmp_path):
    import io

    from mlcore.synthetic import generate_tile

    project = two_taxonomy_project(owner, tmp_path, images=2)
    client = api_client_for(owner)
    assert client.post(f"/api/projects/{project.pk}/infer/", {}, format="multipart").status_code == 409  # no model
    train = wait_job(client.post(f"/api/projects/{project.pk}/train/", FAST, format="json").json()["id"],
                     celery_worker_process, timeout=300)
    assert train.state == "succeeded", train.error
    wait_job(train.result["prediction_job"], celery_worker_process)

    image, instance_map, _ = generate_tile(np.random.default_rng(7), size=(128, 128), n_nuclei=12)
    from PIL import Image as PILImage
    png, npy = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(image).save(png, format="PNG")
    np.save(npy, instance_map)
    png.name, npy.name = "new_tile.png", "new_tile.npy"
    png.seek(0), npy.seek(0)
    response = client.post(f"/api/projects/{project.pk}/infer/", {"image": png, "mask": npy}, format="multipart")
    assert response.status_code == 202, response.content
    job = wait_job(response.json()["id"], celery_worker_process)
    assert job.state == "succeeded", job.error
    names = {name.rsplit("/", 1)[-1] for name in job.result["files"]}
    assert {"new_tile_colon.npy", "new_tile_breast.npy", "new_tile_colon_overlay.png", "new_tile.json"} <= names
    download = client.get(f"/api/jobs/{job.pk}/files/new_tile_breast.npy")
    assert download.status_code == 200
    table = np.load(io.BytesIO(b"".join(download.streaming_content)))
    ids = np.unique(instance_map)
    assert table.shape == (len(ids[ids > 0]), 2)
    assert set(table[:, 0]) == set(ids[ids > 0]) and table[:, 1].max() < 3
