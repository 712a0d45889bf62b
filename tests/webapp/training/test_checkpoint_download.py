"""A model checkpoint downloads as opaque bytes under a file name every system accepts."""

from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from webapp.projects.operations import do_create_project
from webapp.training.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_the_checkpoint_is_octet_stream_with_a_safe_file_name(owner, api_client_for):
    project = do_create_project("Colon: trial run 2", actor=owner)
    path = Path(settings.MEDIA_ROOT) / "models" / f"p{project.pk}" / "v1.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04" + bytes(2000))
    ModelVersion.objects.create(project=project, number=1, checkpoint_file=str(path.relative_to(settings.MEDIA_ROOT)),
                                data_snapshot_at=timezone.now(), is_active=True)
    response = api_client_for(owner).get(f"/api/projects/{project.pk}/versions/1/checkpoint/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"  # not guessed from ".pt"
    assert response["Content-Disposition"] == 'attachment; filename="Colon_trial_run_2-v1.pt"'
    assert b"".join(response.streaming_content) == path.read_bytes()
