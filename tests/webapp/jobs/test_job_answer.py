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
