"""Killing a worker (SIGKILL, no clean-up code runs) during an import, a training or an inference.

A killed pool child loses its task: Celery delivers it again (acks_late, reject_on_worker_lost) and the
job runs once more, to success, after removing what the killed attempt wrote. A whole worker killed takes
its task's message with it until the broker's visibility timeout: the job is ended by the reaper
(webapp.jobs.liveness) once it has been silent and no live worker holds it, and the failed job removes its
folders. Either way the job ends, no row of a half import stays, and MEDIA_ROOT holds exactly what the
database refers to (tests/media_inventory.py), with nothing left for the periodic sweep.

Every wait is bounded; the whole file takes about two minutes on two cores.
"""

from __future__ import annotations

import io
import time
from datetime import timedelta

import numpy as np
import psutil
import pytest
from django.utils import timezone

from tests.conftest import wait_for
from tests.media_inventory import assert_media_matches_database
from tests.webapp.dataset_helpers import upload, wait_job, zip_folder
from tests.workers.fault_stack import fault_stack
from tests.workers.training_helpers import two_taxonomy_project
from webapp.datasets.models import Dataset, Image, Label, Nucleus
from webapp.jobs import liveness
from webapp.jobs.models import Job
from webapp.jobs.sweep import GRACE, sweep_orphans
from webapp.projects.operations import do_create_project
from webapp.training.models import ModelVersion
from workers.tasks import reap_lost_jobs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker, pytest.mark.slow]

# About 18,000 nuclei: an import of three seconds or more, so that a kill lands in the middle of it.
IMPORT_IMAGES = 120
# Long enough to be killed in the middle (a few seconds per run), after its first epoch was kept to go on from,
# short enough to run again once retried.
TRAINING = {"epochs": 6, "stages": ["sparse"], "samples_per_epoch": 256, "batch_size": 32}


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock(), fault_stack(tmp_path_factory.mktemp("worker-kills")) as stack:
        yield stack


@pytest.fixture(autouse=True)
def empty_media(stack):
    stack.empty_media()
    yield


@pytest.fixture(scope="module")
def import_archive(tmp_path_factory) -> bytes:
    from mlcore.synthetic import generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("import") / "tiles", format="seed", n_images=IMPORT_IMAGES,
                            nuclei_per_image=150, class_names=["epithelial", "inflammatory"], seed=4,
                            size=(256, 256))
    return zip_folder(root).getvalue()


def archive_file(data: bytes) -> io.BytesIO:
    buffer = io.BytesIO(data)
    buffer.name = "tiles.zip"
    return buffer


def progress_of(job_id: int) -> dict:
    return Job.objects.values_list("progress", flat=True).get(pk=job_id) or {}


def wait_mid_way(job_id: int, under_way, what: str, timeout: float = 90) -> None:
    """Until ``under_way(progress)``; fails at once if the job ended first (its work is too small)."""
    def check() -> bool:
        job = Job.objects.get(pk=job_id)
        assert not job.finished, f"{what} ended ({job.state}) before it could be killed: give it more work"
        return job.state == Job.State.RUNNING and under_way(job.progress or {})
    wait_for(check, timeout=timeout, interval=0.05, message=what)


# ------------------------------------------------------------------------------------------ the three jobs
# Each starts its job through the API and returns once the job is in the middle of its work.

def start_import(owner, client, tmp_path, import_archive):
    project = do_create_project("kill an import", actor=owner)
    response = upload(client, project.pk, archive_file(import_archive), name="tiles", format="seed")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    # Rows are being written: images prepared and sent to PostgreSQL, the transaction not committed.
    wait_mid_way(job_id, lambda progress: str(progress.get("message", "")).startswith("image ")
                 and progress.get("percent", 0) >= 10, "the import")
    assert progress_of(job_id)["percent"] < 80, "the import was nearly done: make the dataset bigger"
    return project, job_id


def start_training(owner, client, tmp_path, import_archive):
    project = two_taxonomy_project(owner, tmp_path, images=2)
    response = client.post(f"/api/projects/{project.pk}/train/", TRAINING, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    # Killed once an epoch's checkpoint is kept (the job's resume point), so that a delivery again goes on from it.
    wait_mid_way(job_id, lambda progress: progress.get("stage") == "sparse"
                 and bool((Job.objects.get(pk=job_id).result or {}).get("resume")), "the training's first epoch")
    return project, job_id


def start_inference(owner, client, tmp_path, import_archive):
    from django.conf import settings
    from PIL import Image as PILImage

    from mlcore.checkpoint import save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.model import CrossTrainedModel
    from mlcore.synthetic import generate_tile
    from mlcore.types import LabelSet as MLLabelSet

    project = do_create_project("kill an inference", actor=owner)
    # An untrained model, wide enough that classifying a few hundred nuclei takes seconds on a CPU.
    model = CrossTrainedModel([MLLabelSet("tissue", ("a", "b"))], "small", {"width": 32, "stem_stride": 1})
    checkpoint = f"projects/{project.pk}/models/v1.pt"
    save_checkpoint(settings.MEDIA_ROOT / checkpoint, model, "sparse", 0, True, TrainConfig())
    ModelVersion.objects.create(project=project, number=1, checkpoint_file=checkpoint, is_active=True,
                                data_snapshot_at=timezone.now(), label_sets=[{"name": "tissue", "classes": ["a", "b"]}])
    image, instance_map, _ = generate_tile(np.random.default_rng(3), size=(768, 768), n_nuclei=400)
    png, npy = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(image).save(png, format="PNG")
    np.save(npy, instance_map)
    png.name, npy.name = "big_tile.png", "big_tile.npy"
    png.seek(0), npy.seek(0)
    response = client.post(f"/api/projects/{project.pk}/infer/", {"image": png, "mask": npy}, format="multipart")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    wait_mid_way(job_id, lambda progress: progress.get("percent") == 20, "the inference")
    time.sleep(0.3)  # into the classification, which takes a few seconds
    return project, job_id


STARTERS = {"import": start_import, "training": start_training, "inference": start_inference}


# ------------------------------------------------------------------------------------------ what must hold

def check_rows(kind: str, project, job: Job) -> None:
    """No half import: either the one dataset the retried import wrote, whole and once, or nothing."""
    if kind == "import":
        datasets = list(Dataset.objects.filter(project=project))
        images = Image.objects.filter(project=project)
        nuclei = Nucleus.objects.filter(image__project=project)
        if job.state == Job.State.SUCCEEDED:
            assert [d.pk for d in datasets] == [job.result["dataset_id"]]
            dataset = datasets[0]
            assert dataset.image_count == images.count() == IMPORT_IMAGES
            assert images.values("name").distinct().count() == IMPORT_IMAGES
            assert dataset.nucleus_count == nuclei.count() == job.result["nuclei"] > 0
            assert Label.objects.filter(nucleus__image__project=project).count() == nuclei.count()
        else:
            assert datasets == [] and not images.exists() and not nuclei.exists()
            assert not Label.objects.filter(nucleus__image__project=project).exists()
    elif kind == "training":
        versions = ModelVersion.objects.filter(project=project)
        assert versions.count() == (1 if job.state == Job.State.SUCCEEDED else 0)
        if job.state == Job.State.SUCCEEDED:
            assert versions.get().job_id == job.pk
    else:  # an inference writes no rows but its job's
        assert ModelVersion.objects.filter(project=project).count() == 1


def wait_until_gone(pids: list[int], timeout: float = 20) -> None:
    def gone() -> bool:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return not alive
    wait_for(gone, timeout=timeout, message=f"the killed worker's processes {pids} to end")


@pytest.mark.parametrize("kill", ["child", "whole worker"])
@pytest.mark.parametrize("kind", ["import", "training", "inference"])
def test_a_worker_killed_mid_job_leaves_no_stuck_job_no_half_rows_and_no_stray_file(
        kind, kill, stack, owner, api_client_for, tmp_path, import_archive, monkeypatch):
    client = api_client_for(owner)
    project, job_id = STARTERS[kind](owner, client, tmp_path, import_archive)
    killed = stack.kill_worker(whole=kill == "whole worker")

    if kill == "child":
        # Delivered again to the pool's new child, and run to the end: it was killed mid-run (attempt 2).
        job = wait_job(job_id, stack.worker, timeout=150)
        assert (job.state, job.attempts) == ("succeeded", 2), f"{job.state}: {job.error}\n{stack.worker.log()}"
    else:
        # Its message left with the worker; the reaper ends the job once silent past LOST_AFTER (2 s here,
        # 30 s in production) and held by no live worker: the fresh worker is asked, under the same name.
        monkeypatch.setattr(liveness, "LOST_AFTER", timedelta(seconds=2))
        assert Job.objects.get(pk=job_id).state == "running"
        job = wait_for(lambda: reap_lost_jobs() and None or Job.objects.filter(
            pk=job_id, state__in=Job.FINISHED_STATES).first(), timeout=60, interval=1,
            message=f"the reaper to end job {job_id}")
        assert job.state == "failed" and "worker running this job stopped" in job.error
    wait_until_gone(killed)  # an import's preparing processes too, whose parent was killed
    if kind == "training" and job.state == "succeeded":
        # The second delivery went on from the epoch the killed attempt kept, not from the start.
        assert "going on from its lost attempt's epoch" in job.log_tail, job.log_tail
        assert [h["stage"] for h in ModelVersion.objects.get(job=job).history] == ["sparse"] * TRAINING["epochs"]
        assert wait_job(job.result["prediction_job"], stack.worker, timeout=120).state == "succeeded"
    elif kind == "training":
        # Reaped: the epoch it kept stays, and the project page offers to resume from it.
        assert job.result["resume"]["epoch"] >= 1 and job.result["resume"]["remaining"] == ["sparse"]
        assert job.error.endswith("Resume it from the project page: it goes on from where it stopped."), job.error
    assert not Job.objects.filter(state__in=("queued", "running")).exists()

    check_rows(kind, project, job)
    # The job cleared up after itself: the retried attempt removed what the killed one wrote, the reaped
    # job its upload and its work folders. Nothing is left for the sweep (beat, every ten minutes, for
    # what is older than an hour: here at once).
    assert_media_matches_database()
    assert sweep_orphans(now=time.time() + GRACE.total_seconds() + 60) == []
    if kind == "inference" and job.state == "succeeded":
        assert client.get(f"/api/jobs/{job_id}/files/big_tile.json").status_code == 200
