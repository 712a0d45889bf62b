"""Bad uploads fail with a message naming the file and the problem, and leave nothing behind."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.webapp.dataset_helpers import (media_files, project_files, staging_leftovers, upload, upload_and_wait,
                                          zip_entries)
from webapp.datasets.models import Dataset, Image, Label, LabelSet, Nucleus
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def png_bytes(array) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def seed_entries(image=None, mask=None, types=None, classes=("a", "b")) -> dict[str, bytes]:
    """A one-image seed dataset; pass overrides to break one part of it."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    instance_map = np.zeros((32, 32), np.int32)
    instance_map[4:10, 4:10] = 1
    instance_map[15:25, 15:25] = 2
    return {
        "images/tile.png": image if image is not None else png_bytes(rgb),
        "masks/tile.npy": npy_bytes(mask if mask is not None else instance_map),
        "types/tile.npy": npy_bytes(types if types is not None else np.array([[1, 0], [2, 1]])),
        "classes.json": json.dumps({"classes": list(classes)}).encode(),
    }


def assert_nothing_left(project, job=None):
    assert not Dataset.objects.filter(project=project).exists()
    assert not Image.objects.filter(project=project).exists()
    assert not Nucleus.objects.filter(image__project=project).exists()
    assert not LabelSet.objects.filter(project=project).exists()
    assert media_files() == project.files_before  # no image, mask, thumbnail or staged upload left
    if job is not None:
        assert not staging_leftovers(job)


@pytest.fixture
def project(owner):
    project = do_create_project("errors", actor=owner)
    project.files_before = media_files()
    return project


@pytest.fixture
def client(owner, api_client_for):
    return api_client_for(owner)


@pytest.mark.parametrize("entries, file_named, problem", [
    (seed_entries(image=b"this is not an image"), "images/tile.png", "not an image"),
    (seed_entries(mask=np.zeros((16, 32), np.int32)), "tile", "differs from image size"),
    (seed_entries(types=np.array([[1, 0], [7, 1]])), "types/tile.npy", "not in the mask: 7"),
    (seed_entries(types=np.array([[1, 0], [2, 5]])), "types/tile.npy", "class index outside the label set"),
    ({"../escape.txt": b"x", **seed_entries()}, "../escape.txt", "unsafe path"),
    ({"/etc/evil": b"x", **seed_entries()}, "/etc/evil", "unsafe path"),
    # Masks only, uploaded as labelled: the way out is the form's checkbox, not the library's argument.
    ({k: v for k, v in seed_entries().items() if not k.startswith("types/")}, "types",
     "types folder not found (seed format needs types/<stem>.npy): to import the nuclei without classes, uncheck "
     "Labelled in the upload form (labelled=false in the API)"),
])
def test_bad_dataset_is_rejected_whole(project, client, celery_worker_process, entries, file_named, problem):
    job = upload_and_wait(client, project.pk, zip_entries(entries), celery_worker_process, name="bad", format="seed")
    assert job.state == "failed"
    assert file_named in job.error and problem in job.error, job.error
    assert "/staging/" not in job.error  # names files as the user knows them
    assert_nothing_left(project, job)


def test_empty_archive(project, client, celery_worker_process):
    job = upload_and_wait(client, project.pk, zip_entries({}), celery_worker_process, name="empty", format="seed")
    assert job.state == "failed" and "archive is empty" in job.error
    assert_nothing_left(project, job)


def test_not_a_zip_is_refused_before_it_is_kept(project, client):
    archive = io.BytesIO(b"plain text")
    archive.name = "lab tiles (June).zip"
    response = upload(client, project.pk, archive, name="nozip", format="seed")
    assert response.status_code == 400
    # The user's file, not the upload.zip the server would stage it as; no job, nothing staged.
    assert response.json()["detail"] == ("archive: lab tiles (June).zip: not a zip archive; upload the dataset's "
                                         "folder as a .zip, or its files")
    assert not Job.objects.filter(project=project).exists()
    assert_nothing_left(project)


def test_an_archive_and_files_together_are_refused(project, client):
    response = client.post(f"/api/projects/{project.pk}/datasets/", {
        "name": "both", "format": "seed", "archive": zip_entries(seed_entries()),
        "files": [io.BytesIO(b"x")]}, format="multipart")
    assert response.status_code == 400 and response.json()["detail"].startswith("files: send a zip archive")
    assert_nothing_left(project)


def test_decompression_bomb_is_refused(project, client, celery_worker_process):
    # 100 million pixels of zeros: a tiny file that would decode to a huge image.
    bomb = io.BytesIO()
    PILImage.new("L", (10_000, 10_000)).save(bomb, format="PNG")
    entries = seed_entries(image=bomb.getvalue())
    job = upload_and_wait(client, project.pk, zip_entries(entries), celery_worker_process, name="bomb", format="seed")
    assert job.state == "failed"
    assert "images/tile.png" in job.error and "too large" in job.error, job.error
    assert_nothing_left(project, job)


def test_archive_over_the_size_limit_is_refused_before_staging(project, client, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    response = upload(client, project.pk, zip_entries(seed_entries()), name="big", format="seed")
    assert response.status_code == 413
    assert response.json()["detail"].startswith("archive:") and "over the limit" in response.json()["detail"]
    assert_nothing_left(project)


def test_unpacked_size_limit_stops_zip_bombs(tmp_path):
    from mlcore.types import DataError
    from webapp.datasets.importing import safe_extract

    archive = tmp_path / "bomb.zip"
    archive.write_bytes(zip_entries({"big.bin": b"\0" * 5_000_000}).getvalue())
    with pytest.raises(DataError, match="over the limit"):
        safe_extract(archive, tmp_path / "out", max_bytes=1_000_000)
    assert not (tmp_path / "out" / "big.bin").exists()


def test_the_same_image_twice_is_refused(project, client, celery_worker_process):
    first = upload_and_wait(client, project.pk, zip_entries(seed_entries()), celery_worker_process,
                            name="first", format="seed")
    assert first.state == "succeeded", first.error
    files_before = sorted(project_files(project.pk))
    second = upload_and_wait(client, project.pk, zip_entries(seed_entries()), celery_worker_process,
                             name="second", format="seed")
    assert second.state == "failed"
    assert "images/tile.png" in second.error and "already uploaded to the project (as 'tile' in dataset 'first')" in second.error, second.error
    assert list(Dataset.objects.filter(project=project).values_list("name", flat=True)) == ["first"]
    assert sorted(project_files(project.pk)) == files_before
    assert Label.objects.filter(nucleus__image__project=project).count() == 2


def test_missing_fields_are_named(project, client):
    response = client.post(f"/api/projects/{project.pk}/datasets/", {"format": "seed"}, format="multipart")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "name:" in detail
    response = client.post(f"/api/projects/{project.pk}/datasets/", {"name": "x", "format": "tiff"},
                           format="multipart")
    assert "format:" in response.json()["detail"]


def test_a_taken_dataset_name_is_refused_before_the_upload_is_kept(project, client, celery_worker_process):
    assert upload_and_wait(client, project.pk, zip_entries(seed_entries()), celery_worker_process,
                           name="same", format="seed").state == "succeeded"
    files_before = sorted(media_files())
    response = upload(client, project.pk, zip_entries(seed_entries(classes=("x", "y"))), name="same", format="seed")
    assert response.status_code == 400
    assert response.json()["detail"] == "name: project 'errors' already has a dataset named 'same'"
    assert Job.objects.filter(project=project).count() == 1 and sorted(media_files()) == files_before


def test_a_name_being_imported_is_refused_too(project, client, owner):
    queued = Job.objects.create(kind=Job.Kind.IMPORT, project=project, created_by=owner,   # as a worker sees it
                                params={"name": "pending", "format": "seed"})
    response = upload(client, project.pk, zip_entries(seed_entries()), name="pending", format="seed")
    assert response.status_code == 400
    assert response.json()["detail"] == (f"name: a dataset named 'pending' is being imported into project 'errors' "
                                         f"(job {queued.pk}): choose another name")


def test_label_set_name_with_other_classes_is_refused(project, client, celery_worker_process):
    import numpy as np

    assert upload_and_wait(client, project.pk, zip_entries(seed_entries()), celery_worker_process,
                           name="one", format="seed", label_set="tax").state == "succeeded"
    rng = np.random.default_rng(5)
    other = seed_entries(image=png_bytes(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), classes=("p", "q"))
    job = upload_and_wait(client, project.pk, zip_entries(other), celery_worker_process, name="two",
                          format="seed", label_set="tax")
    assert job.state == "failed" and "label_set: 'tax' has classes ['a', 'b']" in job.error
    assert Dataset.objects.filter(project=project).count() == 1


def test_unpacking_reports_what_it_has_written(tmp_path):
    from webapp.datasets.importing import safe_extract

    archive = tmp_path / "tiles.zip"
    archive.write_bytes(zip_entries({f"images/{i}.bin": bytes(1000 * (i + 1)) for i in range(3)}).getvalue())
    seen = []
    safe_extract(archive, tmp_path / "out", max_bytes=10_000,
                 progress=lambda written, total: seen.append((written, total)))
    assert seen == [(1000, 6000), (3000, 6000), (6000, 6000)]


def test_the_unpacked_limit_is_its_own_setting_four_times_the_upload_by_default(settings):
    """Masks compress several times over: a 1.07 GB zip of 10,000 tiles unpacks to 3.6 GB, which the upload's own
    limit (2 GiB) refused after the upload was accepted."""
    from webapp import settings as defaults

    assert defaults.MAX_UNPACKED_BYTES == 4 * defaults.MAX_UPLOAD_BYTES == 8 * 1024**3
