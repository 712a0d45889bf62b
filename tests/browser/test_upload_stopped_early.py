"""The page's upload form, sending a zip over MAX_UPLOAD_BYTES in a body the Content-Length check lets in: the
server stops the upload as it arrives (webapp.core.upload_handlers) and reads the rest only to drop it, and the
browser, still sending, shows the 413's message beside the archive field, with nothing kept on the server. Before,
the whole body was written to a temporary file first."""

from pathlib import Path

import pytest

from tests.browser.conftest import shown_beside_its_field
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_archive_over_the_limit_is_refused_beside_its_field(logged_in_page, live_server, owner, settings,
                                                                tmp_path, monkeypatch):
    from django.core.files import uploadhandler

    settings.MAX_UPLOAD_BYTES = 1_000_000
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    stored = []
    original = uploadhandler.TemporaryFileUploadHandler.receive_data_chunk
    monkeypatch.setattr(uploadhandler.TemporaryFileUploadHandler, "receive_data_chunk",
                        lambda self, data, start: stored.append(len(data)) or original(self, data, start))
    project = do_create_project("big upload", actor=owner)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.fill("#upload-form input[name=name]", "tiles")
    page.set_input_files("#upload-form input[name=archive]", files=[
        {"name": "scan_batch.zip", "mimeType": "application/zip", "buffer": bytes(8_000_000)}])
    page.click("#upload-form button[type=submit]")

    message, _ = shown_beside_its_field(page, "upload-form", "archive", "#upload-form [data-role=error]")
    assert message.inner_text() == ("scan_batch.zip: the files of this upload are over the limit of 1.0 MB "
                                    "(MAX_UPLOAD_BYTES), and it was refused as it arrived; send the dataset in several "
                                    "smaller uploads")
    assert 0 < sum(stored) <= settings.MAX_UPLOAD_BYTES   # of the 8 MB sent
    assert not list(Path(tmp_path).iterdir()) and not Job.objects.exists()
