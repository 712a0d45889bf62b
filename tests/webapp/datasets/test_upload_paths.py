"""A multi-file upload: multipart keeps only file names, so folders travel in ``paths``. Files that would
land on one path, or unsafe paths, are a 400 with a JSON detail, never a 500."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from mlcore.synthetic import generate_dataset
from webapp.datasets.models import Dataset, Nucleus
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


@pytest.fixture
def project(owner, settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_PROCESSES = 1
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the test runs the job itself
    return do_create_project("files", actor=owner)


@pytest.fixture
def seed_files(tmp_path):
    root = generate_dataset(tmp_path / "d", "seed", n_images=2, nuclei_per_image=4, size=(48, 48))
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def post(client, project, files: dict[str, bytes], paths=None):
    data = {"name": "d", "format": "seed",
            "files": [SimpleUploadedFile(name, content) for name, content in files.items()]}
    if paths is not None:
        data["paths"] = paths
    return client.post(f"/api/projects/{project.pk}/datasets/", data, format="multipart")


@pytest.mark.parametrize("in_memory", [True, False])
def test_files_that_share_a_name_without_paths_are_a_400(api_client_for, owner, project, seed_files, settings,
                                                         in_memory):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440 if in_memory else 0  # large uploads go to temporary files
    response = post(api_client_for(owner), project, seed_files)  # masks/x.npy and types/x.npy
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    detail = response.json()["detail"]
    assert detail.startswith("files:") and "would be stored as" in detail and "paths" in detail, detail
    assert not Job.objects.exists()


def test_paths_give_the_folders_and_the_dataset_imports(api_client_for, owner, project, seed_files, settings):
    from workers.tasks import run_job

    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    response = post(api_client_for(owner), project, seed_files, paths=list(seed_files))
    assert response.status_code == 202, response.content
    assert run_job(response.json()["id"]) == "succeeded", Job.objects.get().error
    dataset = Dataset.objects.get(project=project)
    assert dataset.image_count == 2 and Nucleus.objects.filter(image__dataset=dataset).count() > 0


@pytest.mark.parametrize("paths, field, problem", [
    (["../a.npy"], "paths", "unsafe path"),
    (["/etc/a.npy"], "paths", "unsafe path"),
    (["a.npy", "b.npy"], "paths", "2 paths for 1 files"),
])
def test_bad_paths_are_a_400(api_client_for, owner, project, paths, field, problem):
    response = post(api_client_for(owner), project, {"a.npy": b"x"}, paths=paths)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}:") and problem in detail, detail


def test_a_file_where_a_folder_is_needed_is_a_400(api_client_for, owner, project):
    response = post(api_client_for(owner), project, {"a": b"x", "b": b"y"}, paths=["masks", "masks/a.npy"])
    assert response.status_code == 400 and "both a file and the folder" in response.json()["detail"]
