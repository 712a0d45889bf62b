"""An admin manages the team and deletes a dataset in Chromium, as a person would: add a member by
username, change their role, remove them (confirming), delete a dataset by typing its name; the database
is checked after each step, and the deletion job runs on a real worker."""

from pathlib import Path

import pytest
from django.conf import settings

from tests.browser.conftest import wait_until
from tests.conftest import wait_for
from tests.webapp.viewer_project import build_viewer_project
from webapp.datasets.models import Dataset, Image, Nucleus
from webapp.jobs.models import Job
from webapp.projects.models import Membership

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def role_of(project, username: str) -> str | None:
    return Membership.objects.filter(project=project, user__username=username).values_list("role", flat=True).first()


def test_admin_adds_changes_and_removes_a_member_then_deletes_a_dataset(logged_in_page, live_server, owner, make_user,
                                                                       tmp_path, celery_worker_process):
    vp = build_viewer_project(owner, tmp_path / "sources", n_images=2, nuclei=5, size=64)
    project = vp.project
    make_user("alice", email="alice@lab.example")
    page = logged_in_page
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # The project page leads to the members page.
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.click("#members-link")
    page.wait_for_url(f"{live_server.url}/projects/{project.pk}/members/")

    # Add alice by username, as a reviewer.
    page.fill("#add-member input[name=user]", "alice")
    page.select_option("#add-member select[name=role]", "reviewer")
    page.click("#add-member button[type=submit]")
    page.wait_for_selector("tr[data-username=alice]")
    assert "alice was added as a reviewer." in page.inner_text(".flash")
    assert role_of(project, "alice") == "reviewer"

    # Make her a curator.
    row = page.locator("tr[data-username=alice]")
    row.locator("select[name=role]").select_option("curator")
    row.locator("form.member-role button[type=submit]").click()
    page.wait_for_selector("tr[data-username=alice][data-role=curator]")
    assert "alice is now a curator." in page.inner_text(".flash")
    assert role_of(project, "alice") == "curator"

    # Remove her: a dismissed confirmation changes nothing, an accepted one removes her.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("tr[data-username=alice] form.member-remove button").click()
    page.wait_for_timeout(300)
    assert role_of(project, "alice") == "curator"
    messages = []

    def accept(dialog):
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.locator("tr[data-username=alice] form.member-remove button").click()
    page.wait_for_selector("tr[data-username=alice]", state="detached")
    assert messages and messages[0].startswith("Remove alice from Colon merge?")
    assert "alice was removed from the project." in page.inner_text(".flash")
    assert role_of(project, "alice") is None

    # Delete the dataset alpha: the button waits for its exact name.
    alpha = vp.alpha
    folder = Path(settings.MEDIA_ROOT) / alpha.storage_dir
    assert folder.is_dir()
    page.goto(f"{live_server.url}/projects/{project.pk}/datasets/{alpha.pk}/")
    button = page.locator("#delete-dataset button[type=submit]")   # aria-disabled until the name is typed
    assert button.is_disabled()
    page.fill("#delete-dataset input[name=confirm_name]", "alph")
    assert button.is_disabled()
    page.fill("#delete-dataset input[name=confirm_name]", "alpha")
    wait_until(page, "!document.querySelector('#delete-dataset button[type=submit]').hasAttribute('aria-disabled')")
    button.click()
    page.wait_for_url(f"{live_server.url}/projects/{project.pk}/")
    assert "Dataset 'alpha' is being deleted" in page.inner_text(".flash")
    job = Job.objects.get(kind="delete", project=project)
    assert job.created_by == owner and job.params["dataset"] == alpha.pk

    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=Job.FINISHED_STATES).first(), timeout=120,
                   message=f"the deletion job\n{celery_worker_process.log()}")
    assert job.state == "succeeded", job.error
    assert not Dataset.objects.filter(pk=alpha.pk).exists()
    assert not Image.objects.filter(dataset_id=alpha.pk).exists()
    assert not Nucleus.objects.filter(image__dataset_id=alpha.pk).exists()
    assert not folder.exists()
    assert Dataset.objects.filter(pk=vp.beta.pk).exists()

    page.reload()
    datasets = page.inner_text("#datasets")
    assert "alpha" not in datasets and "beta" in datasets
    assert not errors, errors
