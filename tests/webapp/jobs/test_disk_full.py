"""A full disk, as a user meets it: a job that needs more free space than the data folder has fails with "not enough
disk space in the data folder (DATA_DIR): X MB needed, Y MB free" (no server path), checked before it writes where
the need is known (an archive's unpacking, a slide import's spool of its detections), and the same error when the
disk fills as it writes (ENOSPC: a dataset import's image files, the spool, a training's checkpoint). Its folder is
removed and its rows rolled back, as for any failed job. Before, the job failed with "OSError: [Errno 28] No space
left on device: 'tile.png' (at ...)", or "could not write ..." where OpenCV wrote the file, and a training left its
half-written checkpoint."""

from __future__ import annotations

import errno
import re
import shutil
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.generated_datasets import generated_dataset
from tests.webapp.dataset_helpers import upload, zip_folder
from tests.webapp.slide_helpers import build_fixture_slide
from tests.workers.training_helpers import FAST, two_taxonomy_project
from webapp.datasets import bulk
from webapp.datasets.models import Dataset, Image, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.projects.slides_folder import do_set_slides_folder
from webapp.training.models import ModelVersion
from workers.tasks import run_job

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection

NEEDED = re.compile(r"not enough disk space in the data folder \(DATA_DIR\): (.+) needed, (.+) free\. ")
FILLED = re.compile(r"not enough disk space in the data folder \(DATA_DIR\): the disk filled up as the job wrote its "
                    r"files, (.+) free now\. ")
REMEDY = ("What the job had written was removed; free some space on that disk (or move DATA_DIR to a larger one) and "
          "start the job again.")
FREE = 1_500_000   # what the data folder's disk has free, as the tests tell it


@pytest.fixture(autouse=True)
def jobs_run_here(monkeypatch, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.DATA_DIR = tmp_path / "data"
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # each test runs its jobs itself


@pytest.fixture
def small_disk(monkeypatch, settings):
    """The disk of MEDIA_ROOT says it has FREE bytes free (shutil.disk_usage); any other disk is left as it is."""
    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")

    def disk_usage(path):
        if Path(path).resolve().is_relative_to(Path(settings.MEDIA_ROOT).resolve()):
            return usage(10 * FREE, 9 * FREE, FREE)
        return real(path)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n / 1e3:,.1f} kB"


def failed_for_disk(job_id: int) -> tuple[str | None, str]:
    """The job failed with the disk message: (what it needed or None, what was free), as the message says them."""
    job = Job.objects.get(pk=job_id)
    assert job.state == Job.State.FAILED, (job.state, job.error)
    needed, filled = NEEDED.match(job.error), FILLED.match(job.error)
    assert (needed or filled) and REMEDY in job.error, job.error
    assert str(Path(settings.MEDIA_ROOT).parent) not in job.error and "Errno" not in job.error, job.error
    assert job.log_tail.splitlines()[-1].startswith("failed: not enough disk space in the data folder (DATA_DIR)")
    return needed.groups() if needed else (None, filled[1])


def nothing_left(project, job_id: int, settings) -> None:
    assert not Dataset.objects.filter(project=project).exists() and not Image.objects.filter(project=project).exists()
    assert not Nucleus.objects.filter(image__project=project).exists()
    media = Path(settings.MEDIA_ROOT)
    assert not (media / f"projects/{project.pk}/datasets/job-{job_id}").exists()
    assert not [p for p in (media / "staging").rglob("*") if p.is_file()] if (media / "staging").exists() else True


# ------------------------------------------------------------------------------------------ dataset import

@pytest.fixture
def tiles(tmp_path):
    """A seed dataset of 2 tiles of 512 px, zipped without compression (so it unpacks to about its size)."""
    root = generated_dataset(tmp_path / "tiles", format="seed", n_images=2, nuclei_per_image=8, seed=3,
                             size=(512, 512))
    archive = zip_folder(root)
    with zipfile.ZipFile(archive) as zf:
        unpacked = sum(member.file_size for member in zf.infolist())
    archive.seek(0)
    return archive, unpacked


def test_an_archive_larger_than_the_free_space_is_not_unpacked(owner, api_client_for, tiles, small_disk, settings):
    archive, unpacked = tiles
    project = do_create_project("disk", actor=owner)
    response = upload(api_client_for(owner), project.pk, archive, name="tiles", format="seed")
    assert response.status_code == 202, response.content
    assert unpacked > FREE   # the test's premise
    assert run_job(response.json()["id"]) == "failed"
    needed, free = failed_for_disk(response.json()["id"])
    assert (needed, free) == (size(unpacked), size(FREE))
    nothing_left(project, response.json()["id"], settings)


def test_a_disk_that_fills_as_an_import_writes_its_images_fails_it_with_the_disk_message(owner, api_client_for, tiles,
                                                                                        settings, monkeypatch):
    from webapp.datasets import preparing

    archive, _ = tiles
    project = do_create_project("disk", actor=owner)
    response = upload(api_client_for(owner), project.pk, archive, name="tiles", format="seed")
    written = []

    def write_then_fill(path, *args):   # the first image is written, the disk fills on the next file
        if written:
            disk_full()
        written.append(path)
        real_write(path, *args)

    real_write = preparing._write
    monkeypatch.setattr(preparing, "_write", write_then_fill)
    assert run_job(response.json()["id"]) == "failed"
    needed, free = failed_for_disk(response.json()["id"])
    assert needed is None and free.endswith(" MB")
    assert len(written) == 1 and not written[0].exists()   # what was written went with the job's folder
    nothing_left(project, response.json()["id"], settings)


# ------------------------------------------------------------------------------------------ slide import

@pytest.fixture
def slide_project(owner, settings, tmp_path):
    if bulk.uses_copy():
        pytest.skip("PostgreSQL stores the detections as it reads them: no spool")
    settings.SLIDES_ROOT = (tmp_path / "share").resolve()
    slide = build_fixture_slide(settings.SLIDES_ROOT / "cases")
    project = do_create_project("slides", actor=owner)
    do_set_slides_folder(project, ".")
    return project, slide


def register(client, project, slide):
    response = client.post(f"/api/projects/{project.pk}/slides/", {
        "name": "case", "path": "cases/case-1.tif",
        "detections": SimpleUploadedFile("cells.geojson", slide.geojson.read_bytes())}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_a_slide_whose_detections_need_more_than_the_free_space_is_refused_before_its_spool(
        owner, api_client_for, slide_project, settings, monkeypatch):
    project, slide = slide_project
    geojson_size = slide.geojson.stat().st_size
    job_id = register(api_client_for(owner), project, slide)
    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(geojson_size, geojson_size, geojson_size // 2)
                        if Path(path).resolve().is_relative_to(Path(settings.MEDIA_ROOT).resolve()) else real(path))
    assert run_job(job_id) == "failed"
    needed, free = failed_for_disk(job_id)
    assert (needed, free) == (size(geojson_size), size(geojson_size // 2))
    nothing_left(project, job_id, settings)


def test_a_disk_that_fills_as_the_spool_is_written_fails_the_slide_import_with_the_disk_message(
        owner, api_client_for, slide_project, settings, monkeypatch):
    import pickle

    from webapp.datasets import slide_import

    project, slide = slide_project
    monkeypatch.setattr(slide_import, "CHUNK_NUCLEI", 10)
    job_id = register(api_client_for(owner), project, slide)
    dumped = []

    class Pickle:   # the spool's writer: its second chunk finds the disk full
        load = staticmethod(pickle.load)
        HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL

        @staticmethod
        def dump(value, file, **kwargs):
            if dumped:
                disk_full()
            dumped.append(value)
            pickle.dump(value, file, **kwargs)

    monkeypatch.setattr(slide_import, "pickle", Pickle)
    assert run_job(job_id) == "failed"
    needed, _ = failed_for_disk(job_id)
    assert needed == size(slide.geojson.stat().st_size) and len(dumped) == 1
    nothing_left(project, job_id, settings)


# ------------------------------------------------------------------------------------------ training

def test_a_disk_that_fills_as_a_checkpoint_is_written_fails_the_training_and_leaves_no_half_checkpoint(
        owner, tmp_path, settings, monkeypatch):
    from mlcore import checkpoint

    project = two_taxonomy_project(owner, tmp_path / "data", images=2, nuclei=20)
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner,
                             params={"options": {**FAST, "stages": ["sparse"], "predict_tta": False}})
    files_written = []

    def save_until_full(state, target, *args, **kwargs):   # the checkpoint's writer: the disk fills after 64 KiB
        sink = open(target, "wb") if isinstance(target, (str, Path)) else target
        files_written.append(Path(sink.name))
        try:
            sink.write(bytes(65536))
            disk_full()
        finally:
            if sink is not target:
                sink.close()

    monkeypatch.setattr(checkpoint.torch, "save", save_until_full)
    assert run_job(job.pk) == "failed"
    needed, free = failed_for_disk(job.pk)
    assert needed is not None and needed.endswith(" MB"), needed   # about the model's weights
    assert files_written and not any(path.exists() for path in files_written)   # no half-written checkpoint
    assert not ModelVersion.objects.filter(project=project).exists()
    assert not [p for p in Path(settings.MEDIA_ROOT).rglob("*.tmp")]
    assert not (Path(settings.MEDIA_ROOT) / f"scratch/job-{job.pk}").exists()


# ------------------------------------------------------------------------------------------ the request

def test_an_upload_that_fills_the_disk_as_it_is_staged_is_a_507_that_keeps_nothing(owner, api_client_for, tiles,
                                                                                    settings, monkeypatch):
    from webapp.datasets import uploads

    monkeypatch.setattr(uploads, "file_move_safe", disk_full)   # the upload's move into its staging folder
    project = do_create_project("disk", actor=owner)
    response = upload(api_client_for(owner), project.pk, tiles[0], name="tiles", format="seed")
    assert response.status_code == 507, response.content
    assert response.json()["detail"].startswith("The server's disk is full: there was no space left to write this "
                                                "request (in the data folder, DATA_DIR, or the temporary folder")
    assert not Job.objects.exists() and not list((Path(settings.MEDIA_ROOT) / "staging").glob("*"))
