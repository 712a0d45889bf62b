"""Each host's mirror forgets what no row or running job names: a worker on another host kept, in its mirror,
the checkpoints of SIGKILLed trainings (never uploaded) and the images of deleted projects, until the mirror
outgrew MEDIA_MIRROR_MAX_BYTES. The bucket's own sweep runs on one host; this one touches the mirror only."""

from __future__ import annotations

import time

import pytest

from webapp.core import media
from webapp.datasets.models import Dataset
from webapp.jobs.sweep import GRACE, sweep_mirror
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def mirror_file(remote_media, name: str) -> None:
    path = remote_media.mirror / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_the_mirror_forgets_orphans_and_keeps_what_rows_name(remote_media, owner):
    project = do_create_project("kept", actor=owner)
    live = Dataset.objects.create(project=project, name="live", format="seed",
                                  storage_dir=f"projects/{project.pk}/datasets/live")
    kept = [f"{live.storage_dir}/images/a.png"]
    orphans = ["projects/99999/datasets/gone/images/a.png",        # a deleted project's images
               "scratch/job-7/last.pt",                            # a SIGKILLed training's checkpoint
               f"projects/{project.pk}/datasets/job-27/images/b.png"]  # a killed import's half
    for name in kept + orphans:
        mirror_file(remote_media, name)
    # The same orphan in the bucket: the mirror's sweep leaves the bucket to the bucket's sweep.
    remote_media.client.put_object(Bucket=remote_media.bucket_name, Key=orphans[0], Body=b"x")

    assert sweep_mirror(now=time.time() - 60) == []          # within the grace period: nothing goes
    removed = sweep_mirror(now=time.time() + 2 * GRACE.total_seconds())
    assert {"projects/99999", "scratch/job-7", f"projects/{project.pk}/datasets/job-27"} <= set(removed)
    assert all(not (remote_media.mirror / name).exists() for name in orphans)
    assert all((remote_media.mirror / name).exists() for name in kept)
    assert orphans[0] in remote_media.keys()


def test_nothing_is_removed_while_a_job_runs_on_this_host(remote_media):
    mirror_file(remote_media, "scratch/job-8/last.pt")
    with media.mirror_in_use():
        assert sweep_mirror(now=time.time() + 2 * GRACE.total_seconds()) == []
    assert (remote_media.mirror / "scratch/job-8/last.pt").exists()
    assert sweep_mirror(now=time.time() + 2 * GRACE.total_seconds()) == ["scratch/job-8"]


def test_a_web_host_cleans_its_mirror_with_the_trim_command(remote_media):
    """A web host runs no job: manage.py trim_mirror (from cron) forgets the orphans too, then trims."""
    import io
    import os

    from django.core.management import call_command

    mirror_file(remote_media, "projects/99998/datasets/gone/images/a.png")
    old = time.time() - 2 * GRACE.total_seconds()
    for folder, folders, files in os.walk(remote_media.mirror):
        for name in folders + files:   # a folder is as old as its time says
            os.utime(os.path.join(folder, name), (old, old))
    out = io.StringIO()
    call_command("trim_mirror", stdout=out)
    assert out.getvalue().startswith("forgot 2 orphaned folders; removed")   # the dataset's, then its project's
    assert not (remote_media.mirror / "projects/99998").exists()
