"""Training, prediction, inference and checkpoint downloads with every media file in the object store.

The process runs in ``STORAGE_URL`` mode (``remote_media``: a fresh bucket on moto's S3 server, MEDIA_ROOT an
empty folder nobody may write). The jobs are run in this process by calling their runners, as the worker
would; a second "host" is simulated by pointing MEDIA_MIRROR at a new empty folder.
"""

from __future__ import annotations

import io
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.core import media
from webapp.datasets.models import Image, Nucleus
from webapp.jobs.models import Job
from webapp.training import operations, runner
from webapp.training.models import ModelVersion, Prediction

pytestmark = pytest.mark.django_db


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


@pytest.fixture
def remote_project(request, settings, tmp_path, owner):
    """A two-taxonomy project imported straight into the bucket: its files exist there (and in this
    process's mirror, which is emptied so that every later read comes from the bucket)."""
    settings.IMPORT_PROCESSES = 1
    remote = request.getfixturevalue("remote_media")
    project = two_taxonomy_project(owner, tmp_path / "generated", images=2, nuclei=12)
    shutil.rmtree(remote.mirror)
    dataset_files = remote.keys()
    assert dataset_files and all(key.startswith(f"projects/{project.pk}/") for key in dataset_files)
    return project, remote, dataset_files


def run_and_commit(django_capture_on_commit_callbacks, function, *args):
    """Run ``function`` and then what it left for after the commit, except the hand-over of new jobs to
    Celery (no worker here: the test runs those jobs itself)."""
    with django_capture_on_commit_callbacks() as callbacks:
        result = function(*args)
    for callback in callbacks:
        if "do_enqueue_job" not in callback.__qualname__:
            callback()
    return result


def quiet(*args, **kwargs):
    pass


@pytest.mark.slow  # real training and inference
def test_training_prediction_inference_and_downloads_through_the_bucket(
        remote_project, settings, tmp_path, owner, api_client_for, django_capture_on_commit_callbacks, monkeypatch):
    project, remote, dataset_files = remote_project
    client = api_client_for(owner)

    # A training of two stages: the first stage's checkpoint is kept (published) for a resume until the
    # training succeeds, then discarded; the version's checkpoint is published before its row commits.
    kept = []
    original_keep = operations.do_keep_stage_checkpoint

    def keep(job, **kwargs):
        point = original_keep(job, **kwargs)
        kept.append((point["checkpoint"], point["checkpoint"] in remote.keys()))
        return point

    monkeypatch.setattr(operations, "do_keep_stage_checkpoint", keep)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse", "correlation"]}})
    result = run_and_commit(django_capture_on_commit_callbacks, runner.run_training, job, quiet, lambda: False)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert version.checkpoint_file == f"projects/{project.pk}/models/v1.pt"
    assert [(name.endswith("-stage1.pt"), in_bucket) for name, in_bucket in kept] == [(True, True)]
    # The bucket holds exactly what the database names: the dataset files and the checkpoint (the kept stage
    # checkpoint was discarded after the success; the scratch folder never left the host).
    assert remote.keys() == dataset_files | {version.checkpoint_file}
    assert files_under(remote.media_root) == []
    assert not media.work_path(f"scratch/job-{job.pk}").exists()
    # The crop cache stays on this host, under DATA_DIR; the version's config does not name that folder.
    assert runner.crop_cache_dir() == Path(settings.DATA_DIR) / "cache" / "crops"
    assert "cache_dir" not in version.config

    # Another host, with an empty mirror, predicts: it downloads the checkpoint and the images.
    settings.MEDIA_MIRROR = tmp_path / "second-host"
    prediction = Job.objects.get(pk=result["prediction_job"])
    outcome = runner.run_prediction(prediction, quiet, lambda: False)
    nuclei = Nucleus.objects.filter(image__project=project).count()
    assert outcome["predictions"] == Prediction.objects.filter(model_version=version).count() == nuclei * 2
    assert (media.work_path(version.checkpoint_file).read_bytes() == remote.read(version.checkpoint_file))

    # The checkpoint download: the permission check, then a redirect to a short-lived pre-signed URL.
    response = client.get(f"/api/projects/{project.pk}/versions/1/checkpoint/")
    assert response.status_code == 302, response.content
    with urllib.request.urlopen(response["Location"]) as answer:
        assert answer.read() == remote.read(version.checkpoint_file)
        assert answer.headers["Content-Disposition"].startswith("attachment")
    assert api_client_for(None).get(f"/api/projects/{project.pk}/versions/1/checkpoint/").status_code in (401, 403)

    # An inference upload on a third host (the web server): uploaded to the bucket before its job is queued,
    # no copy kept here.
    settings.MEDIA_MIRROR = tmp_path / "web-host"
    image = Image.objects.filter(project=project).order_by("id").first()
    png, mask = io.BytesIO(remote.read(image.file)), io.BytesIO(remote.read(image.mask_file))
    png.name, mask.name = "tile one.png", f"tile{Path(image.mask_file).suffix}"
    with django_capture_on_commit_callbacks():
        response = client.post(f"/api/projects/{project.pk}/infer/", {"image": png, "mask": mask},
                               format="multipart")
    assert response.status_code == 202, response.content
    inference = Job.objects.get(pk=response.json()["id"])
    folder = inference.params["folder"]
    assert {key for key in remote.keys() if key.startswith(folder + "/")} == {
        f"{folder}/{inference.params['image']}", f"{folder}/{inference.params['mask']}"}
    assert files_under(settings.MEDIA_MIRROR) == []

    # ... and run by a worker on a fourth host, whose outputs go to the bucket.
    settings.MEDIA_MIRROR = tmp_path / "gpu-host"
    outcome = runner.run_inference(inference, quiet, lambda: False)
    assert outcome["files"] and all(name.startswith(f"{folder}/out/") for name in outcome["files"])
    assert set(outcome["files"]) <= remote.keys()
    assert files_under(settings.MEDIA_MIRROR / folder) == []  # the worker keeps no copy of one-off files
    inference.result = outcome
    inference.state = Job.State.SUCCEEDED
    inference.save(update_fields=["result", "state"])

    settings.MEDIA_MIRROR = tmp_path / "web-host"
    for name in outcome["files"]:
        response = client.get(f"/api/jobs/{inference.pk}/files/{Path(name).name}")
        if name.endswith(".png"):
            # Shown inline in a page: streamed from this origin (the CSP allows images from 'self' only).
            assert response.status_code == 200 and response["Content-Type"] == "image/png"
            assert b"".join(response.streaming_content) == remote.read(name)
            continue
        assert response.status_code == 302, response.content
        with urllib.request.urlopen(response["Location"]) as answer:
            assert answer.read() == remote.read(name)
    assert files_under(remote.media_root) == []


def test_a_publish_that_does_not_commit_leaves_no_checkpoint_in_the_bucket(remote_media, owner, tmp_path,
                                                                           monkeypatch):
    from django.utils import timezone

    from webapp.projects.operations import do_create_project

    project = do_create_project("unpublished", actor=owner)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner)
    checkpoint = tmp_path / "trained.pt"
    checkpoint.write_bytes(b"weights" * 1000)
    real_publish = media.publish

    def publish_then_fail(name):
        real_publish(name)
        assert name in remote_media.keys()  # uploaded ...
        raise ConnectionError("the database went away")  # ... but the row naming it does not commit

    monkeypatch.setattr(media, "publish", publish_then_fail)
    with pytest.raises(ConnectionError):
        operations.do_publish_version(project, job=job, checkpoint=checkpoint, config={}, label_sets=[],
                                      trained_on={}, metrics={}, data_snapshot_at=timezone.now(), parent=None)
    assert not ModelVersion.objects.filter(project=project).exists()
    assert remote_media.keys() == set()
    assert files_under(remote_media.mirror) == [] and files_under(remote_media.media_root) == []


def test_a_discarded_resume_checkpoint_leaves_the_bucket(remote_media, owner, django_capture_on_commit_callbacks):
    from webapp.projects.operations import do_create_project

    project = do_create_project("resume", actor=owner)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner, state=Job.State.RUNNING)
    stage_file = media.work_path("elsewhere/stage.pt")
    stage_file.parent.mkdir(parents=True)
    stage_file.write_bytes(b"stage one")
    with django_capture_on_commit_callbacks(execute=True):
        first = operations.do_keep_stage_checkpoint(job, stage="sparse", checkpoint=stage_file, point={})
        second = operations.do_keep_stage_checkpoint(job, stage="correlation", checkpoint=stage_file, point={})
    assert remote_media.keys() == {second["checkpoint"]}  # the earlier stage's replaced, in the bucket too
    Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED)
    job.refresh_from_db()
    assert operations.resume_point(job)["checkpoint"] == second["checkpoint"]
    shutil.rmtree(remote_media.mirror)
    assert operations.resume_point(job)  # found in the bucket, not only in this host's mirror
    with django_capture_on_commit_callbacks(execute=True):
        assert operations.do_discard_resume_points(project) == 1
    assert remote_media.keys() == set() and first["checkpoint"] != second["checkpoint"]
    assert files_under(remote_media.media_root) == []
