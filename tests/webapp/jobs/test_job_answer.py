"""A job's API answer names what it wrote as a user fetches it: files by name with their URLs, no storage keys."""

import pytest

from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def test_a_jobs_files_are_names_with_urls_and_no_storage_key_is_shown(api_client_for, owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    project = do_create_project("answers", actor=owner)
    written = f"projects/{project.pk}/inference/9b4b/out/tile_NuCLS.npy"
    (tmp_path / written).parent.mkdir(parents=True)
    (tmp_path / written).write_bytes(b"\x93NUMPY")
    job = Job.objects.create(kind=Job.Kind.INFER, project=project, created_by=owner, state=Job.State.SUCCEEDED,
                             result={"files": [written], "nuclei": 3})
    training = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=owner, state=Job.State.CANCELLED,
                                  result={"resume": {"checkpoint": f"projects/{project.pk}/models/resume-1.pt",
                                                     "stage": "sparse", "remaining": ["correlation"]}})
    client = api_client_for(owner)
    answer = client.get(f"/api/jobs/{job.pk}/").json()
    assert answer["result"] == {"files": ["tile_NuCLS.npy"], "nuclei": 3}
    assert answer["files"] == [{"name": "tile_NuCLS.npy",
                                "url": f"http://testserver/api/jobs/{job.pk}/files/tile_NuCLS.npy"}]
    fetched = client.get(answer["files"][0]["url"])
    assert fetched.status_code == 200 and b"".join(fetched.streaming_content) == b"\x93NUMPY"
    resumable = client.get(f"/api/jobs/{training.pk}/").json()
    assert resumable["result"]["resume"] == {"stage": "sparse", "remaining": ["correlation"]}
    assert "projects/" not in str(answer) + str(resumable)


def test_a_job_ended_meanwhile_is_not_finished_again_and_a_second_cancel_writes_nothing(owner):
    """A job cancelled while its worker was taken for gone (or failed by the reaper) was turned back into
    succeeded when that worker finished after all, its files swept; each repeated cancel wrote an activity row."""
    from webapp.core.domain_errors import Conflict
    from webapp.core.models import AuditLogEntry
    from webapp.jobs import operations

    job = Job.objects.create(kind=Job.Kind.TRAIN, created_by=owner, state=Job.State.RUNNING)
    operations.do_cancel_job(job, actor=owner)
    with pytest.raises(Conflict, match=r"has already ended \(cancelled\)"):   # its worker was gone: cancelled at once
        operations.do_cancel_job(job, actor=owner)
    assert AuditLogEntry.objects.filter(action="job.cancel_requested").count() == 1
    operations.do_mark_cancelled(job.pk)
    finished = operations.do_finish_job(job.pk, {"model_version": 3})
    assert finished.state == Job.State.CANCELLED and finished.result == {}


def test_a_failed_jobs_log_ends_saying_why(owner):
    """The log of a failed import ended at its last step ("reading 30 images"); why was only in its error."""
    from webapp.jobs import operations

    job = Job.objects.create(kind=Job.Kind.IMPORT, created_by=owner, state=Job.State.RUNNING,
                             log_tail="reading 30 images (coco)")
    failed = operations.do_fail_job(job.pk, "images/a.png: this image was already uploaded to the project\nmore")
    assert failed.log_tail.splitlines() == [
        "reading 30 images (coco)", "failed: images/a.png: this image was already uploaded to the project"]
