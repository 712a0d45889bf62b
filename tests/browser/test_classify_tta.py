"""The project page's "Classify a new image" form sends test-time augmentation as its checkbox says: ticked
by default, and unticked really off (an unticked checkbox is not sent, which the API would read as on)."""

import pytest
from django.utils import timezone

from tests.browser.conftest import choose_tile_to_classify
from tests.conftest import wait_for
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.training.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_classify_form_sends_tta_as_ticked(logged_in_page, live_server, owner, tmp_path, monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the jobs' parameters are what is tested
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.is_checked("#infer-form input[name=tta]")
    sent = []
    for ticked in (False, True):
        choose_tile_to_classify(page)
        page.set_checked("#infer-form input[name=tta]", ticked)
        page.click("#infer-form button[type=submit]")
        job = wait_for(lambda: Job.objects.filter(project=project, kind=Job.Kind.INFER).exclude(pk__in=sent)
                       .first(), message="the inference job")
        sent.append(job.pk)
        assert job.params["tta"] is ticked
