"""A failed job's error names the user's file, never a path on the server."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.jobs import operations as job_operations
from webapp.jobs.errors import public_error
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")  # jobs report progress on their own connection


EMPTY_ZIP = b"PK\x05\x06" + b"\0" * 18   # a zip's end record and nothing else: a valid, empty archive


@pytest.fixture
def upload_empty_zip(api_client_for, owner, settings, tmp_path, monkeypatch):
    """Upload an empty zip as dataset ``name`` of a new project, its job left for the test to run; the answer."""
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr(job_operations, "_send", lambda job: None)
    projects = {}

    def upload(name: str = "d", project: str = "errors"):
        if project not in projects:
            projects[project] = do_create_project(project, actor=owner)
        return api_client_for(owner).post(
            f"/api/projects/{projects[project].pk}/datasets/",
            {"name": name, "format": "seed", "archive": SimpleUploadedFile("upload.zip", EMPTY_ZIP)},
            format="multipart")
    return upload


def test_a_failed_jobs_error_holds_no_server_path(upload_empty_zip, settings, tmp_path):
    from workers.tasks import run_job

    job = Job.objects.get(pk=upload_empty_zip().json()["id"])
    (Path(settings.MEDIA_ROOT) / job.params["staging"] / "upload.zip").unlink()  # fails with an OSError
    assert run_job(job.pk) == "failed"
    error = Job.objects.get(pk=job.pk).error
    assert "upload.zip" in error, error
    assert str(tmp_path) not in error and "/staging/" not in error and "site-packages" not in error, error


def test_public_error_keeps_the_users_names_and_drops_server_paths(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    staging = f"{settings.MEDIA_ROOT}/staging/0123abcd/extracted"
    assert public_error(f"{staging}/Labels/tile.mat: inst_map too large") == "Labels/tile.mat: inst_map too large"
    assert public_error(f"OSError: cannot open '{tmp_path}/media/projects/3/x.png'") == "OSError: cannot open 'x.png'"
    assert public_error("KeyError at /usr/lib/python3/dist-packages/numpy/core.py:10") == "KeyError at core.py:10"
    # Not paths on this machine: kept.
    assert public_error("see /api/jobs/3/ or http://host/a/b") == "see /api/jobs/3/ or http://host/a/b"


def test_a_jobs_api_answer_and_page_leave_out_its_storage_on_the_server(upload_empty_zip, api_client_for, client,
                                                                         owner):
    accepted = upload_empty_zip().json()
    staging = Job.objects.get(pk=accepted["id"]).params["staging"]
    api = api_client_for(owner)
    answers = [accepted["job"], api.get(f"/api/jobs/{accepted['id']}/").json(),
               *api.get("/api/jobs/", {"kind": "import"}).json()["results"]]
    for answer in answers:
        assert "staging" not in answer["params"] and answer["params"]["name"] == "d", answer["params"]
        assert staging.split("/")[-1] not in str(answer)
    client.force_login(owner)
    page = client.get(f"/jobs/{accepted['id']}/").content.decode()
    assert staging.split("/")[-1] not in page and "staging" not in page


def test_a_bad_upload_is_one_line_in_the_workers_log_and_a_crash_keeps_its_traceback(upload_empty_zip, settings,
                                                                                       caplog):
    import logging

    from workers.tasks import run_job

    response = upload_empty_zip()
    with caplog.at_level(logging.INFO, logger="workers.tasks"):
        assert run_job(response.json()["id"]) == "failed"
    failed = [r for r in caplog.records if r.name == "workers.tasks" and "failed" in r.getMessage()]
    error = Job.objects.get(pk=response.json()["id"]).error
    assert [(r.levelno, r.exc_info) for r in failed] == [(logging.WARNING, None)]
    assert failed[0].getMessage().endswith(error) and "Traceback" not in caplog.text

    # A fault of the server's own keeps its traceback for whoever debugs it.
    caplog.clear()
    again = upload_empty_zip("e")
    (Path(settings.MEDIA_ROOT) / Job.objects.get(pk=again.json()["id"]).params["staging"] / "upload.zip").unlink()
    with caplog.at_level(logging.INFO, logger="workers.tasks"):
        assert run_job(again.json()["id"]) == "failed"
    crashed = [r for r in caplog.records if r.name == "workers.tasks" and "failed" in r.getMessage()]
    assert [r.levelno for r in crashed] == [logging.ERROR] and crashed[0].exc_info is not None
