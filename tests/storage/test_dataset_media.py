"""Datasets with their files in an S3 bucket (moto's server) and MEDIA_ROOT unwritable: an upload, its
import job, the image views, a COCO export, a deletion and the orphan sweep, all in this process, the job
run by the test itself (as a worker would, but with no broker)."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

from mlcore.synthetic import generate_dataset
from tests.webapp.dataset_helpers import zip_entries, zip_folder
from webapp.datasets.models import Dataset, Image
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


@pytest.fixture
def project(owner, remote_media, settings, monkeypatch):
    settings.IMPORT_PROCESSES = 2  # forked workers write the files: they must name them in the mirror too
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    return do_create_project("remote", actor=owner)


def post_upload(client, project, archive, name="d") -> Job:
    response = client.post(f"/api/projects/{project.pk}/datasets/", {"archive": archive, "name": name,
                                                                     "format": "seed"}, format="multipart")
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def run(job: Job) -> Job:
    from workers.tasks import run_job

    run_job(job.pk)
    job.refresh_from_db()
    return job


def referenced_names(dataset: Dataset) -> set[str]:
    names = set()
    for image in Image.objects.filter(dataset=dataset):
        names |= {image.file, image.mask_file, image.thumbnail_file}
    return names


def files_under(folder: Path) -> list[Path]:
    """The files under ``folder``, but for the mirror's lock file (webapp.core.media.mirror_in_use)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".in-use"] if folder.is_dir() else []


def another_host(settings, tmp_path, name: str) -> Path:
    """This process now reads as a web server on another host would: an empty mirror of its own."""
    mirror = tmp_path / name
    settings.MEDIA_MIRROR = mirror
    return mirror


def test_an_imported_dataset_lives_in_the_bucket_and_is_served_and_deleted_from_it(
        api_client_for, client, owner, project, remote_media, settings, tmp_path):
    seed = generate_dataset(tmp_path / "seed-d", "seed", n_images=3, nuclei_per_image=5, size=(64, 48))
    job = run(post_upload(api_client_for(owner), project, zip_folder(seed)))
    assert job.state == Job.State.SUCCEEDED, job.error
    dataset = Dataset.objects.get(project=project)
    assert dataset.image_count == 3 and dataset.storage_dir == f"projects/{project.pk}/datasets/job-{job.pk}"

    # Exactly what the rows name: no staged upload, no unpacked archive, nothing else.
    names = referenced_names(dataset)
    assert len(names) == 9 and all(name.startswith(dataset.storage_dir + "/") for name in names)
    assert remote_media.keys() == names
    assert files_under(remote_media.media_root) == []

    # A web server on another host: its mirror starts empty and fills from the bucket.
    mirror = another_host(settings, tmp_path, "web-host-mirror")
    client.force_login(owner)
    for image in Image.objects.filter(dataset=dataset):
        for kind, name in (("image", image.file), ("thumbnail", image.thumbnail_file)):
            response = client.get(f"/media-files/images/{image.pk}/{kind}")
            assert response.status_code == 200
            assert b"".join(response.streaming_content) == remote_media.read(name)
            assert response["Cache-Control"] == "private, max-age=86400"
    assert sorted(p.relative_to(mirror).as_posix() for p in files_under(mirror)) == sorted(
        name for image in Image.objects.filter(dataset=dataset) for name in (image.file, image.thumbnail_file))

    # A COCO export from a third host reads every image (and mask) through the storage.
    another_host(settings, tmp_path, "export-host-mirror")
    response = api_client_for(owner).get(f"/api/datasets/{dataset.pk}/export/coco.zip")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        for image in Image.objects.filter(dataset=dataset):
            assert archive.read(f"images/{image.name}{Path(image.file).suffix}") == remote_media.read(image.file)

    # The deletion job removes the rows, then the objects.
    deletion = api_client_for(owner).delete(f"/api/projects/{project.pk}/datasets/{dataset.pk}/")
    assert deletion.status_code == 202, deletion.content
    assert run(Job.objects.get(pk=deletion.json()["id"])).state == Job.State.SUCCEEDED
    assert not Dataset.objects.exists() and remote_media.keys() == set()
    assert files_under(remote_media.media_root) == []


def test_a_failed_import_leaves_nothing_in_the_bucket_and_names_no_server_path(
        api_client_for, owner, project, remote_media, tmp_path):
    seed = generate_dataset(tmp_path / "seed-bad", "seed", n_images=3, nuclei_per_image=5, size=(64, 48))
    entries = {p.relative_to(seed).as_posix(): p.read_bytes() for p in sorted(seed.rglob("*")) if p.is_file()}
    broken = sorted(name for name in entries if name.startswith("images/"))[-1]  # the last: the first are written
    entries[broken] = b"not an image at all"
    job = post_upload(api_client_for(owner), project, zip_entries(entries))
    assert remote_media.keys() == {f"{job.params['staging']}/upload.zip"}

    job = run(job)
    assert job.state == Job.State.FAILED
    assert Path(broken).name in job.error, job.error
    assert str(remote_media.mirror) not in job.error and "staging" not in job.error, job.error
    assert not Dataset.objects.exists()
    assert remote_media.keys() == set()  # the upload went with the job
    assert files_under(remote_media.mirror) == []  # no unpacked upload, no half-written dataset on the worker
    assert files_under(remote_media.media_root) == []


def test_an_import_that_fails_after_uploading_its_files_removes_them_from_the_bucket(
        owner, project, remote_media, tmp_path, monkeypatch):
    """The files are in the bucket before the rows commit; a failure after that (here: the last step inside
    the transaction) takes them out again. Called as manage.py import_dataset does: no job to clean up."""
    from webapp.datasets import bulk
    from webapp.datasets.importing import do_import_dataset

    uploaded = []

    def fail_after_upload(*tables):
        uploaded.extend(remote_media.keys())
        raise RuntimeError("the database went away")

    monkeypatch.setattr(bulk, "analyze_after_commit", fail_after_upload)
    seed = generate_dataset(tmp_path / "seed-late", "seed", n_images=2, nuclei_per_image=5, size=(64, 48))
    with pytest.raises(RuntimeError, match="went away"):
        do_import_dataset(project, name="late", format="seed", path=seed, actor=owner)
    assert len(uploaded) == 6 and all(key.startswith(f"projects/{project.pk}/datasets/") for key in uploaded)
    assert not Dataset.objects.exists() and not Image.objects.exists()
    assert remote_media.keys() == set()
    assert files_under(remote_media.mirror) == []


def test_an_upload_is_in_the_bucket_before_its_job_row_names_it(api_client_for, owner, project, remote_media):
    archive = zip_entries({"images/a.png": b"x"})
    staging = post_upload(api_client_for(owner), project, archive).params["staging"]
    assert staging.startswith("staging/")
    assert remote_media.keys() == {f"{staging}/upload.zip"}
    assert remote_media.read(f"{staging}/upload.zip") == archive.getvalue()
    assert files_under(remote_media.mirror) == []  # the web process keeps no copy: the worker downloads it


def test_the_sweep_lists_the_bucket_and_removes_only_orphans(owner, project, remote_media):
    from webapp.core import media
    from webapp.jobs.sweep import GRACE, sweep_orphans

    def put(name: str) -> None:
        remote_media.client.put_object(Bucket=remote_media.bucket_name, Key=name, Body=b"x")

    p = project.pk
    Dataset.objects.create(project=project, name="kept", format="seed", storage_dir=f"projects/{p}/datasets/kept")
    Job.objects.create(kind="import", state="queued", project=project, params={"staging": "staging/queued"})
    for name in (f"projects/{p}/datasets/kept/images/a.png", f"projects/{p}/datasets/killed/images/a.png",
                 f"projects/{p}/datasets/killed/masks/a.png", "staging/queued/upload.zip",
                 "staging/abandoned/files/a.png", f"projects/{p}/models/job-9.pt", "projects/99999/models/v1.pt",
                 "projects/not-a-number/x"):
        put(name)
    media.work_path("staging/abandoned/files/a.png").parent.mkdir(parents=True)  # this host's copy goes too
    media.work_path("staging/abandoned/files/a.png").write_bytes(b"x")

    assert sweep_orphans() == []  # everything is younger than the grace period
    removed = sweep_orphans(now=time.time() + 2 * GRACE.total_seconds())
    assert sorted(removed) == sorted(["staging/abandoned", f"projects/{p}/datasets/killed",
                                      f"projects/{p}/models/job-9.pt", "projects/99999"])
    assert remote_media.keys() == {f"projects/{p}/datasets/kept/images/a.png", "staging/queued/upload.zip",
                                   "projects/not-a-number/x"}
    assert not media.work_path("staging/abandoned").exists()
    assert files_under(remote_media.media_root) == []
