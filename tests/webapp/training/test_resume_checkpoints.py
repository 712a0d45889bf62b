"""Kept stage checkpoints: the sweep keeps those a job names, removes the others; a success discards them."""

import os
import time

import pytest

from webapp.core.models import AuditLogEntry
from webapp.jobs.models import Job
from webapp.jobs.sweep import GRACE, sweep_orphans
from webapp.projects.operations import do_create_project
from webapp.training.operations import do_discard_resume_points

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


def old_file(media, relative: str) -> str:
    path = media / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"checkpoint")
    stamp = time.time() - GRACE.total_seconds() - 60
    os.utime(path, (stamp, stamp))
    return relative


def test_the_sweep_keeps_a_named_stage_checkpoint_and_removes_an_unnamed_one(media, owner):
    project = do_create_project("resume", actor=owner)
    named = old_file(media, f"projects/{project.pk}/models/resume-job-7-stage1.pt")
    unnamed = old_file(media, f"projects/{project.pk}/models/resume-job-8-stage2.pt")
    Job.objects.create(kind=Job.Kind.TRAIN, project=project, state=Job.State.CANCELLED,
                       result={"resume": {"stage": "sparse", "checkpoint": named, "remaining": ["completion"]}})
    assert sweep_orphans() == [unnamed]
    assert (media / named).is_file() and not (media / unnamed).exists()


def test_a_success_discards_the_projects_kept_checkpoints(media, owner, django_capture_on_commit_callbacks):
    project, other = do_create_project("resume", actor=owner), do_create_project("other", actor=owner)
    mine = old_file(media, f"projects/{project.pk}/models/resume-job-1-stage1.pt")
    theirs = old_file(media, f"projects/{other.pk}/models/resume-job-2-stage1.pt")
    job = Job.objects.create(kind=Job.Kind.TRAIN, project=project, state=Job.State.FAILED,
                             result={"resume": {"stage": "sparse", "checkpoint": mine}, "note": "kept"})
    Job.objects.create(kind=Job.Kind.TRAIN, project=other, state=Job.State.CANCELLED,
                       result={"resume": {"stage": "sparse", "checkpoint": theirs}})
    with django_capture_on_commit_callbacks(execute=True):  # the files go once the rows are committed
        assert do_discard_resume_points(project) == 1
    assert not (media / mine).exists()
    job.refresh_from_db()
    assert job.result["note"] == "kept" and "resume" not in job.result
    assert job.result["resume_discarded"]["stage"] == "sparse"
    # A resume asked for now says why there is none (it said the job "finished no stage").
    from webapp.training.operations import NotResumable, resume_point

    with pytest.raises(NotResumable, match=f"job {job.pk}'s checkpoint of stage sparse was discarded when a later "
                                           "training of the project succeeded"):
        resume_point(job, project)
    assert AuditLogEntry.objects.filter(action="training.resume_points_discarded").count() == 1
    assert (media / theirs).is_file()
