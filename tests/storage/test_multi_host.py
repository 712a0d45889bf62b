"""The multi-host claim: a worker that shares nothing with the web process but the database, Redis and the
object store runs an import, a training to a published version, a prediction, an inference upload and
serves an export, with nothing read from the web process's disk.

The web process is this test process (``remote_media``: its MEDIA_ROOT is an empty folder nobody may write,
its mirror a fresh folder). The worker is a real Celery worker with its own DATA_DIR and MEDIA_ROOT,
folders this process never looks into, and ``STORAGE_URL`` on the same bucket (moto's S3 server on
loopback). At the end the bucket must hold exactly the files the database refers to."""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mlcore.synthetic import generate_dataset, generate_tile
from tests.conftest import WorkerProcess
from tests.storage.conftest import unusable_folder
from tests.webapp.dataset_helpers import infer_upload, upload_and_wait, wait_job, zip_folder
from tests.workers.training_helpers import FAST
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker, pytest.mark.slow]


def names_the_database_refers_to() -> set[str]:
    """Every media name a row refers to, once every job has ended (nothing in use, nothing staged)."""
    from webapp.datasets.models import Image
    from webapp.jobs.models import Job
    from webapp.training.models import ModelVersion

    names: set[str] = set()
    for row in Image.objects.values_list("file", "mask_file", "thumbnail_file"):
        names.update(name for name in row if name)
    names.update(ModelVersion.objects.values_list("checkpoint_file", flat=True))
    names.update(job.result["resume"]["checkpoint"] for job in Job.objects.filter(result__has_key="resume"))
    for job in Job.objects.filter(kind=Job.Kind.INFER, state=Job.State.SUCCEEDED):
        names.update(f"{job.params['folder']}/{job.params[key]}" for key in ("image", "mask"))
        names.update(job.result.get("files", []))
    return names


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


@pytest.fixture
def other_host_worker(remote_media, tmp_path, django_db_blocker):
    """A worker on "another host": its own DATA_DIR and MEDIA_ROOT (read-only, empty), the shared bucket."""
    home = tmp_path / "worker-host"
    data_dir, media_root = home / "data", unusable_folder(home / "media-root-unused")
    data_dir.mkdir(parents=True)
    worker = WorkerProcess(tmp_path / "worker.log", name="otherhost", STORAGE_URL=remote_media.url,
                           DATA_DIR=str(data_dir), MEDIA_ROOT=str(media_root), MEDIA_MIRROR="",
                           MEDIA_MIRROR_MAX_BYTES="0")   # scratch only: nothing kept after a job
    worker.data_dir, worker.media_root = data_dir, media_root
    with django_db_blocker.unblock():
        worker.start()
    yield worker
    worker.stop()


def test_import_train_predict_infer_export_through_the_bucket(owner, api_client_for, remote_media, other_host_worker,
                                                             tmp_path):
    from webapp.datasets.models import Dataset, Image, Nucleus
    from webapp.training.models import ModelVersion, Prediction

    worker = other_host_worker
    client = api_client_for(owner)
    project = do_create_project("two hosts", actor=owner)

    # 1. Import: the upload is staged in the bucket by the web process, unpacked and stored by the worker.
    for name, format, classes, seed in (("colon", "seed", ["epithelial", "inflammatory"], 0),
                                        ("breast", "coco", ["neoplastic", "connective", "dead"], 1)):
        root = generate_dataset(tmp_path / "sources" / name, format=format, n_images=3, nuclei_per_image=25,
                                class_names=classes, seed=seed, size=(160, 160))
        job = upload_and_wait(client, project.pk, zip_folder(root), worker, name=name, format=format)
        assert job.state == "succeeded", job.error + worker.log()
    assert Image.objects.filter(project=project).count() == 6
    assert not [key for key in remote_media.keys() if key.startswith("staging/")]

    # 2. Training to a published version, and 3. the prediction job it queues.
    response = client.post(f"/api/projects/{project.pk}/train/", FAST, format="json")
    assert response.status_code == 202, response.content
    training = wait_job(response.json()["id"], worker, timeout=300)
    assert training.state == "succeeded", training.error + worker.log()
    version = ModelVersion.objects.get(project=project, is_active=True)
    assert version.checkpoint_file in remote_media.keys()
    prediction = wait_job(training.result["prediction_job"], worker)
    assert prediction.state == "succeeded", prediction.error + worker.log()
    nuclei = Nucleus.objects.filter(image__project=project).count()
    assert nuclei > 100 and Prediction.objects.filter(model_version=version).count() == nuclei * 2

    # The checkpoint download is a short-lived pre-signed URL on the bucket, with the bucket's bytes.
    download = client.get(f"/api/projects/{project.pk}/versions/{version.number}/checkpoint/")
    assert download.status_code == 302 and "X-Amz-Expires=120" in download["Location"]
    with urllib.request.urlopen(download["Location"]) as answer:
        assert answer.read() == remote_media.read(version.checkpoint_file)

    # 4. An inference upload: the web process stages the files in the bucket, the worker writes the outputs.
    image, instance_map, _ = generate_tile(np.random.default_rng(5), (128, 128), 12, n_classes=2)
    response = client.post(f"/api/projects/{project.pk}/infer/", infer_upload(image, instance_map, "new tile"),
                           format="multipart")
    assert response.status_code == 202, response.content
    inference = wait_job(response.json()["id"], worker)
    assert inference.state == "succeeded", inference.error + worker.log()
    written = inference.result["files"]
    assert written and set(written) <= remote_media.keys()
    summary = next(name for name in written if name.endswith(".json"))
    answer = client.get(f"/api/jobs/{inference.pk}/files/{Path(summary).name}")
    assert answer.status_code == 302
    with urllib.request.urlopen(answer["Location"]) as fetched:
        assert json.loads(fetched.read()) == json.loads(remote_media.read(summary))

    # 5. An export that reads the images back: this process's mirror starts empty (another web host).
    dataset = Dataset.objects.get(project=project, name="colon")
    response = client.get(f"/api/datasets/{dataset.pk}/export/coco.zip")
    assert response.status_code == 200, getattr(response, "content", b"")
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        images = [n for n in archive.namelist() if n.startswith("images/")]
        assert len(images) == 3
        first = Image.objects.filter(dataset=dataset).order_by("pk").first()
        assert remote_media.read(first.file) in {archive.read(name) for name in images}

    # The bucket holds exactly what the database refers to: nothing staged, nothing half-written, no orphan.
    assert remote_media.keys() == names_the_database_refers_to()
    # Neither process could have used a MEDIA_ROOT (nothing can be created under either).
    assert files_under(remote_media.media_root) == [] and files_under(worker.media_root) == []
    # The worker keeps nothing after its jobs (MEDIA_MIRROR_MAX_BYTES=0): its mirror is scratch space, emptied;
    # what stays on its disk is derived (the crops cache) or its own state.
    assert [name for name in files_under(worker.data_dir / "media-mirror") if name != ".in-use"] == []
    leftovers = [name for name in files_under(worker.data_dir)
                 if not name.startswith(("media-mirror/", "cache/crops/", "run/", "secret_key"))]
    assert leftovers == []
