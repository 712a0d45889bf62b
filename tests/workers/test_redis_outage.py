"""Redis really down (its process killed): requests that need the queue answer 503 with JSON and keep
nothing, and a job queued before the outage is not lost: Redis comes back from its append-only file
(run.py's persistence, tests/workers/fault_stack.py) and the worker runs the job to success.

Every wait is bounded; the test takes about fifteen seconds.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from django.utils import timezone

from tests.conftest import wait_for
from tests.media_inventory import assert_media_matches_database
from tests.webapp.dataset_helpers import upload, wait_job, zip_folder
from tests.workers.fault_stack import fault_stack
from tests.workers.training_helpers import labelled_dataset_row
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job
from webapp.jobs.sweep import GRACE, sweep_orphans
from webapp.projects.operations import do_create_project
from webapp.training.models import ModelVersion

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock(), fault_stack(tmp_path_factory.mktemp("redis-outage")) as stack:
        yield stack


def small_archive(folder, seed: int) -> io.BytesIO:
    from mlcore.synthetic import generate_dataset

    root = generate_dataset(folder, format="seed", n_images=3, nuclei_per_image=10, class_names=["a", "b"],
                            seed=seed, size=(96, 96))
    return zip_folder(root)


def inference_upload() -> dict:
    from PIL import Image as PILImage

    png, npy = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png, format="PNG")
    mask = np.zeros((32, 32), np.int32)
    mask[4:12, 4:12] = 1
    np.save(npy, mask)
    png.name, npy.name = "tile.png", "tile.npy"
    png.seek(0), npy.seek(0)
    return {"image": png, "mask": npy}


def assert_refused(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("application/json")
    assert "Redis" in response.json()["detail"] and "try again" in response.json()["detail"].lower()


def test_a_redis_outage_answers_503_keeps_nothing_and_loses_no_queued_message(stack, owner, api_client_for,
                                                                               tmp_path):
    from django.conf import settings

    from mlcore.checkpoint import save_checkpoint
    from mlcore.config import TrainConfig
    from mlcore.model import CrossTrainedModel
    from mlcore.types import LabelSet as MLLabelSet

    stack.empty_media()
    client = api_client_for(owner)
    project = do_create_project("outage", actor=owner)
    trainable = do_create_project("outage, labelled", actor=owner)
    labelled_dataset_row(trainable)
    checkpoint = f"projects/{project.pk}/models/v1.pt"
    save_checkpoint(settings.MEDIA_ROOT / checkpoint, CrossTrainedModel([MLLabelSet("t", ("a", "b"))], "small",
                    {"width": 4}), "sparse", 0, True, TrainConfig())
    ModelVersion.objects.create(project=project, number=1, checkpoint_file=checkpoint, is_active=True,
                                data_snapshot_at=timezone.now(), label_sets=[{"name": "t", "classes": ["a", "b"]}])

    # No worker takes the message: it waits in Redis when Redis goes down.
    stack.worker.stop()
    response = upload(client, project.pk, small_archive(tmp_path / "before", 5), name="before", format="seed")
    assert response.status_code == 202, response.content
    queued = Job.objects.get(pk=response.json()["id"])
    # Written to the append-only file before Redis answered the push (it is fsynced within a second).
    wait_for(lambda: queued.celery_task_id.encode() in stack.redis.persisted(), timeout=5,
             message="the queued message in Redis's append-only file")
    stack.redis.crash()

    enqueued = AuditLogEntry.objects.filter(action="job.enqueued").count()
    started = time.monotonic()
    assert_refused(upload(client, project.pk, small_archive(tmp_path / "during", 6), name="during", format="seed"))
    # Another project's: this one's queued import would be refused first (a training waits for imports).
    assert_refused(client.post(f"/api/projects/{trainable.pk}/train/", {"epochs": 1}, format="json"))
    assert_refused(client.post(f"/api/projects/{project.pk}/infer/", inference_upload(), format="multipart"))
    assert time.monotonic() - started < 20, "each refusal comes within the broker's connection timeout"
    assert list(Job.objects.values_list("pk", flat=True)) == [queued.pk]  # no row half saved
    assert AuditLogEntry.objects.filter(action="job.enqueued").count() == enqueued
    assert_media_matches_database()  # the queued import's upload, the checkpoint: nothing of the refused ones

    stack.redis.start()  # the same folder: the append-only file is read back
    stack.worker.start(purge=False)
    job = wait_job(queued.pk, stack.worker, timeout=60)
    assert job.state == "succeeded", f"{job.error}\n{stack.worker.log()}"
    assert list(Dataset.objects.filter(project=project).values_list("name", "image_count")) == [("before", 3)]

    # The web process queues again, on the connections it had before the outage.
    response = upload(client, project.pk, small_archive(tmp_path / "after", 7), name="after", format="seed")
    assert response.status_code == 202, response.content
    assert wait_job(response.json()["id"], stack.worker, timeout=60).state == "succeeded"

    assert sweep_orphans(now=time.time() + GRACE.total_seconds() + 60) == []
    assert_media_matches_database()
