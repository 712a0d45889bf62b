"""manage.py backup with the media in an object store (STORAGE_URL): the database is backed up, the bucket is not
copied (its own versioning or replication keeps it, README "Backups"), and both commands say so."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from webapp.core import media

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_bucket_is_named_not_copied_and_a_local_installation_refuses_it(remote_media, settings, tmp_path, owner):
    from webapp.projects.operations import do_create_project
    from webapp.training.models import ModelVersion

    project = do_create_project("remote", actor=owner)
    media.save_stored("projects/1/models/v1.pt", b"weights")
    version = ModelVersion.objects.create(project=project, number=1, checkpoint_file="projects/1/models/v1.pt",
                                          data_snapshot_at=project.created_at, label_sets=[])
    out = StringIO()
    call_command("backup", str(tmp_path / "backup"), stdout=out)
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["media"]["storage"] == "remote" and manifest["media"]["bucket"] == remote_media.bucket_name
    assert manifest["media"]["files"] == {} and list((tmp_path / "backup" / "media").iterdir()) == []
    assert "not copied" in out.getvalue() and "versioning" in out.getvalue()

    assert "1 files named by the rows" in out.getvalue() and manifest["media"]["in_bucket"] == 1

    version.checkpoint_file = "projects/1/models/gone.pt"   # a file the bucket lost (deleted, not versioned)
    version.save()
    with pytest.raises(CommandError, match="not in the bucket.*gone.pt"):
        call_command("backup", str(tmp_path / "again"), stdout=out)
    assert not (tmp_path / "again").exists()   # nothing half-written stays

    settings.STORAGE_URL = ""
    settings.MEDIA_ROOT = tmp_path / "local-media"
    with pytest.raises(CommandError, match="media were in an object store.*same kind of media storage"):
        call_command("restore", str(tmp_path / "backup"), "--force")


def test_a_restore_says_whether_the_bucket_holds_what_the_restored_rows_name(remote_media, tmp_path, owner,
                                                                              restored_install):
    """The bucket is not in the backup: after a restore, the files its rows name are looked up in the bucket, and
    those missing are named (it warned of the bucket whether or not it held them)."""
    from tests.conftest import run_in
    from webapp.projects.operations import do_create_project
    from webapp.training.models import ModelVersion

    project = do_create_project("remote", actor=owner)
    media.save_stored(f"projects/{project.pk}/models/v1.pt", b"weights")
    ModelVersion.objects.create(project=project, number=1, checkpoint_file=f"projects/{project.pk}/models/v1.pt",
                                data_snapshot_at=project.created_at, label_sets=[])
    call_command("backup", str(tmp_path / "backup"), stdout=StringIO())
    install = {**restored_install, "STORAGE_URL": remote_media.url}

    restored = run_in(install, "manage.py", "restore", str(tmp_path / "backup"))
    assert restored.returncode == 0, restored.stderr
    assert "the bucket (STORAGE_URL) holds every media file the restored database names" in restored.stdout

    media.delete(f"projects/{project.pk}/models/v1.pt")   # lost from the bucket since (deleted, not versioned)
    again = run_in(install, "manage.py", "restore", "--force", str(tmp_path / "backup"))
    assert again.returncode == 0, again.stderr
    assert (f"1 media files the restored database names are not in the bucket (STORAGE_URL), e.g. "
            f"projects/{project.pk}/models/v1.pt: restore the bucket as it was at") in again.stdout
