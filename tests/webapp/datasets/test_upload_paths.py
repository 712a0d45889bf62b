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


def _zip(files: dict[str, bytes]):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return SimpleUploadedFile("d.zip", buffer.getvalue(), content_type="application/zip")


def _upper_suffix(name: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{suffix.upper()}" if dot else name


@pytest.mark.parametrize("as_zip", [True, False])
def test_macos_files_are_left_out_and_data_extensions_read_in_any_case(api_client_for, owner, project, seed_files,
                                                                        as_zip):
    """A zip made on a Mac held "masks/._a.npy" beside "masks/a.npy" ("a mask without an image"), and
    "types/a.NPY" was "types/a.npy: file not found"."""
    from workers.tasks import run_job

    top = "nucls/" if as_zip else ""  # a zip's one top folder is stepped into; files come as they are
    files = {f"{top}{_upper_suffix(name) if name.endswith('.npy') else name}": content
             for name, content in seed_files.items()}
    stem = next(name for name in files if "masks/" in name).rsplit("/", 1)[1]
    files.update({f"{top}masks/._{stem}": b"\x00\x05\x16\x07 AppleDouble", f"{top}.DS_Store": b"\x00\x00\x00\x01",
                  "__MACOSX/nucls/._classes.json": b"\x00"})
    client = api_client_for(owner)
    if as_zip:
        response = client.post(f"/api/projects/{project.pk}/datasets/",
                               {"name": "d", "format": "auto", "archive": _zip(files)}, format="multipart")
    else:
        response = post(client, project, files, paths=list(files))
    assert response.status_code == 202, response.content
    assert run_job(response.json()["id"]) == "succeeded", Job.objects.get().error
    assert Dataset.objects.get(project=project).image_count == 2


@pytest.mark.parametrize("as_zip", [True, False])
def test_a_file_name_too_long_to_store_is_refused_naming_it(api_client_for, owner, project, seed_files, as_zip):
    """A 240-character name failed the import with the database's "value too long for type character
    varying(255)" and the server's storage path."""
    from workers.tasks import run_job

    long = "x" * 240
    files = {name.replace(name.rsplit("/", 1)[1].split(".")[0], long, 1) if name.startswith("images/") else name:
             content for name, content in seed_files.items()}
    client = api_client_for(owner)
    if as_zip:
        response = client.post(f"/api/projects/{project.pk}/datasets/",
                               {"name": "d", "format": "seed", "archive": _zip(files)}, format="multipart")
        assert response.status_code == 202, response.content
        assert run_job(response.json()["id"]) == "failed"
        error = Job.objects.get().error
    else:
        response = post(client, project, files, paths=list(files))
        assert response.status_code == 400
        error = response.json()["detail"]
    assert f"images/{long}.png" in error and "244 characters (244 bytes in UTF-8); at most 180" in error, error
    assert "projects/" not in error and "varying" not in error
