"""Nothing that a killed or failed job wrote stays in the media folder (webapp.jobs.sweep)."""

import os
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from webapp.datasets.models import Dataset
from webapp.jobs import operations
from webapp.jobs.models import Job
from webapp.jobs.sweep import GRACE, sweep_orphans
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


def folder(media: Path, relative: str, *, old: bool = True) -> str:
    path = media / relative
    path.mkdir(parents=True)
    (path / "some-file").write_bytes(b"x" * 100)
    if old:
        stamp = time.time() - GRACE.total_seconds() - 60
        os.utime(path, (stamp, stamp))
    return relative


def test_the_sweep_removes_exactly_what_nothing_refers_to(media, owner):
    project = do_create_project("sweep", actor=owner)
    p = project.pk
    kept = [
        folder(media, "staging/queued-upload"),
        folder(media, f"projects/{p}/datasets/stored"),
        folder(media, f"projects/{p}/inference/succeeded"),
        folder(media, "staging/just-staged", old=False),  # its job row is about to be written
    ]
    orphans = [
        folder(media, "staging/of-a-failed-import"),
        folder(media, "staging/of-nothing"),
        folder(media, f"projects/{p}/datasets/of-a-killed-import"),
        folder(media, f"projects/{p}/inference/of-a-failed-inference"),
        folder(media, "scratch/tmp-of-a-killed-training"),
    ]
    Job.objects.create(kind="import", state="queued", project=project, params={"staging": "staging/queued-upload"})
    Job.objects.create(kind="import", state="failed", project=project,
                       params={"staging": "staging/of-a-failed-import"})
    Dataset.objects.create(project=project, name="d", format="seed", storage_dir=f"projects/{p}/datasets/stored")
    Job.objects.create(kind="infer", state="succeeded", project=project,
                       params={"folder": f"projects/{p}/inference/succeeded"})
    Job.objects.create(kind="infer", state="failed", project=project,
                       params={"folder": f"projects/{p}/inference/of-a-failed-inference"})

    assert sorted(sweep_orphans()) == sorted(orphans)
    assert all((media / relative).is_dir() for relative in kept)
    assert not any((media / relative).exists() for relative in orphans)
    assert sweep_orphans() == []


def test_a_running_import_or_training_keeps_its_unreferenced_folders(media, owner):
    project = do_create_project("busy", actor=owner)
    importing = folder(media, f"projects/{project.pk}/datasets/rows-not-committed-yet")
    scratch = folder(media, "scratch/tmp-of-a-running-training")
    Job.objects.create(kind="import", state="running", project=project, params={"staging": "staging/x"})
    Job.objects.create(kind="train", state="running", project=project)
    assert sweep_orphans() == []
    assert (media / importing).is_dir() and (media / scratch).is_dir()


def test_a_failed_or_cancelled_job_removes_its_upload_at_once(media, owner, django_capture_on_commit_callbacks):
    project = do_create_project("clean", actor=owner)
    staged = folder(media, f"staging/{uuid.uuid4().hex}", old=False)
    inputs = folder(media, f"projects/{project.pk}/inference/{uuid.uuid4().hex}", old=False)
    outside = folder(media.parent, "not-media", old=False)  # a job's params never reach outside MEDIA_ROOT
    lost = Job.objects.create(kind="import", state="running", project=project,
                              params={"staging": staged, "folder": "../not-media"})
    queued = Job.objects.create(kind="infer", state="queued", project=project, params={"folder": inputs})

    with django_capture_on_commit_callbacks(execute=True):  # the removal waits for the commit
        operations.do_fail_job(lost.pk, "the worker running this job stopped")
        operations.do_cancel_job(queued)
    assert not (media / staged).exists() and not (media / inputs).exists()
    assert (media.parent / outside).is_dir()


@pytest.mark.django_db(transaction=True)
def test_an_inference_refused_without_redis_keeps_no_file(media, owner, api_client_for, tmp_path):
    import io

    import numpy as np
    from PIL import Image as PILImage

    from workers.celery import app
    from webapp.training.models import ModelVersion

    project = do_create_project("no redis", actor=owner)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="x.pt", is_active=True,
                                data_snapshot_at="2026-01-01T00:00:00Z", label_sets=[])
    png, npy = io.BytesIO(), io.BytesIO()
    PILImage.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png, format="PNG")
    np.save(npy, np.zeros((16, 16), np.int32))
    png.name, npy.name = "tile.png", "tile.npy"
    png.seek(0), npy.seek(0)
    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # a real connection attempt to a closed port
    try:
        response = api_client_for(owner).post(f"/api/projects/{project.pk}/infer/", {"image": png, "mask": npy},
                                              format="multipart")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503 and "Redis" in response.json()["detail"]
    assert not Job.objects.exists()
    assert [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()] == []


def test_the_sweep_removes_a_killed_trainings_staged_checkpoint_and_half_written_cache(media, owner):
    from webapp.training.runner import crop_cache_dir

    project = do_create_project("killed training", actor=owner)
    busy = do_create_project("training now", actor=owner)
    cache = crop_cache_dir()   # per host, under DATA_DIR: not media
    stamp = time.time() - GRACE.total_seconds() - 60
    for path in (media / f"projects/{project.pk}/models/job-7.pt", media / f"projects/{project.pk}/models/v1.pt",
                 media / f"projects/{busy.pk}/models/job-8.pt", cache / ".crops-abc.123.npy", cache / "crops-abc.npy"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (stamp, stamp))
    Job.objects.create(kind="train", state="running", project=busy)
    # A training runs (in another project): the half-written cache entry may be its own.
    assert sweep_orphans() == [f"projects/{project.pk}/models/job-7.pt"]
    Job.objects.filter(project=busy).update(state="failed")
    assert sorted(sweep_orphans()) == sorted(["cache/crops/.crops-abc.123.npy", f"projects/{busy.pk}/models/job-8.pt"])
    assert (media / f"projects/{project.pk}/models/v1.pt").is_file()  # a version's is never swept here
    assert (cache / "crops-abc.npy").is_file() and not (cache / ".crops-abc.123.npy").exists()


def test_the_sweep_removes_the_training_crops_of_a_slide_that_is_gone(media, owner, settings, tmp_path):
    """A slide's training crops (half a gigabyte) stay in the cache for its next training; once its image row is
    gone (the dataset or project deleted), nothing reads them again."""
    from mlcore.infer import slide_crops_cache_prefix
    from tests.webapp.slide_world import build_slide_world
    from webapp.training.runner import crop_cache_dir
    from webapp.training.slide_data import cache_key

    settings.DATA_DIR = tmp_path / "data"
    kept = build_slide_world(owner, "kept", tiles_x=2, tiles_y=2).image
    deleted = build_slide_world(owner, "deleted", tiles_x=2, tiles_y=2).image
    cache = crop_cache_dir()
    cache.mkdir(parents=True)
    stamp = time.time() - GRACE.total_seconds() - 60
    names = {image.pk: f"{slide_crops_cache_prefix(cache_key(image.checksum, image.pk))}{'0' * 32}.npy"
             for image in (kept, deleted)}
    for name in (*names.values(), "crops-tiles.npy", f"{slide_crops_cache_prefix('an older key')}{'1' * 32}.npy"):
        (cache / name).write_bytes(b"x")
        os.utime(cache / name, (stamp, stamp))
    Dataset.objects.filter(pk=deleted.dataset_id).delete()
    removed = sorted(path for path in sweep_orphans() if path.startswith("cache/crops/"))
    assert removed == sorted([f"cache/crops/{names[deleted.pk]}",
                              f"cache/crops/{slide_crops_cache_prefix('an older key')}{'1' * 32}.npy"])
    assert (cache / names[kept.pk]).is_file() and (cache / "crops-tiles.npy").is_file()


@pytest.mark.django_db(transaction=True)
def test_a_failed_import_or_training_removes_its_own_folders_but_never_a_stored_dataset(media, owner):
    from webapp.jobs.sweep import import_folder, remove_job_paths, scratch_folder, staged_checkpoint

    project = do_create_project("own folders", actor=owner)
    killed = Job.objects.create(kind="import", state="running", project=project, params={"staging": "staging/s1"})
    committed = Job.objects.create(kind="import", state="running", project=project, params={"staging": "staging/s2"})
    training = Job.objects.create(kind="train", state="running", project=project)
    for relative in (import_folder(killed), import_folder(committed), "staging/s1", "staging/s2",
                     scratch_folder(training)):
        folder(media, relative, old=False)
    (media / staged_checkpoint(training)).parent.mkdir(parents=True)
    (media / staged_checkpoint(training)).write_bytes(b"weights")
    # Killed after its commit: its dataset is stored, its files stay whatever becomes of the job.
    Dataset.objects.create(project=project, name="d", format="seed", storage_dir=import_folder(committed))

    remove_job_paths(killed, inputs=False)  # a retried import starts afresh but keeps its upload
    assert not (media / import_folder(killed)).exists() and (media / "staging/s1").is_dir()
    for job in (killed, committed, training):
        operations.do_fail_job(job.pk, "the worker running this job stopped")  # removed after the commit
    assert not (media / "staging/s1").exists() and not (media / "staging/s2").exists()
    assert (media / import_folder(committed) / "some-file").is_file()
    assert not (media / scratch_folder(training)).exists() and not (media / staged_checkpoint(training)).exists()


def test_a_retried_import_whose_killed_attempt_committed_answers_with_that_dataset(media, owner):
    """The worker died between the import's commit and the job's "succeeded": the retry must not import
    again (the name is taken) nor remove the stored files; the committed dataset is its result."""
    from webapp.datasets.uploads import run_import_job
    from webapp.jobs.sweep import import_folder

    project = do_create_project("retried", actor=owner)
    staged = folder(media, f"staging/{uuid.uuid4().hex}", old=False)
    job = Job.objects.create(kind="import", state="running", project=project, attempts=2,
                             params={"staging": staged, "name": "committed", "format": "seed", "archive": True})
    stored = folder(media, import_folder(job), old=False)
    dataset = Dataset.objects.create(project=project, name="committed", format="seed", storage_dir=stored,
                                     image_count=3, nucleus_count=42)

    result = run_import_job(job, lambda percent, message: None)

    assert result["dataset_id"] == dataset.pk and result["nuclei"] == 42
    assert (media / stored / "some-file").is_file()
    assert not (media / staged).exists()
    assert Dataset.objects.filter(project=project).count() == 1


def test_the_folder_of_a_deleted_project_goes_whole(media, owner):
    """A project's deletion removes its folder after its commit; a worker killed in between leaves it."""
    project = do_create_project("alive", actor=owner)
    kept = [folder(media, f"projects/{project.pk}/models"), folder(media, "projects/not-a-project-id")]
    gone = project.pk + 1000
    folder(media, f"projects/{gone}/models")
    folder(media, f"projects/{gone}/datasets/abc")
    stamp = time.time() - GRACE.total_seconds() - 60
    os.utime(media / "projects" / str(gone), (stamp, stamp))
    removed = sweep_orphans()
    assert f"projects/{gone}" in removed
    assert not (media / "projects" / str(gone)).exists()
    assert all((media / relative).is_dir() for relative in kept)
