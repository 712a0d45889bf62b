"""Asking to delete a dataset or a project: who may (API and pages), the typed-name confirmation, the 202
with a deletion job, and the 409 while work in the project would be broken by it. The jobs themselves
run in tests/workers/test_delete_jobs.py."""

import pytest
from django.test import Client

from tests.webapp.dataset_helpers import upload, zip_entries
from tests.webapp.datasets.test_dataset_import_errors import seed_entries
from tests.webapp.viewer_project import build_viewer_project
from webapp.core.models import AuditLogEntry
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job
from webapp.projects.models import Project, Role
from webapp.projects.operations import do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def vp(owner, make_user, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    vp = build_viewer_project(owner, tmp_path / "sources", n_images=1, nuclei=4, size=64)
    for role in (Role.CURATOR, Role.REVIEWER):
        do_set_membership(vp.project, make_user(role.value), role, actor=owner)
    return vp


def user(username):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def page_client(username) -> Client:
    client = Client()
    client.force_login(user(username))
    return client


def deletion_jobs():
    return Job.objects.filter(kind=Job.Kind.DELETE)


def test_an_admin_asks_to_delete_the_project_and_gets_a_job(vp, owner, api_client_for):
    response = api_client_for(owner).delete(f"/api/projects/{vp.project.pk}/")
    assert response.status_code == 202, response.content
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert body["url"].endswith(f"/api/jobs/{job.pk}/") and body["job"]["state"] == "queued"
    assert (job.kind, job.project_id, job.created_by) == ("delete", vp.project.pk, owner)
    assert job.params == {"target": "project", "project": vp.project.pk, "name": vp.project.name}
    assert AuditLogEntry.objects.filter(action="project.deletion_requested", actor=owner,
                                        target=f"projects.project:{vp.project.pk}").exists()
    assert Project.objects.filter(pk=vp.project.pk).exists()  # the job does the deleting


def test_only_admins_delete_a_project(vp, outsider, api_client_for):
    response = api_client_for(user("curator")).delete(f"/api/projects/{vp.project.pk}/")
    assert response.status_code == 403
    assert "admin role" in response.json()["detail"]
    assert api_client_for(outsider).delete(f"/api/projects/{vp.project.pk}/").status_code == 404
    assert not deletion_jobs().exists()


def test_curators_delete_a_dataset_reviewers_and_outsiders_cannot(vp, outsider, api_client_for):
    url = f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/"
    response = api_client_for(user("reviewer")).delete(url)
    assert response.status_code == 403 and "curator role" in response.json()["detail"]
    assert api_client_for(outsider).delete(url).status_code == 404
    assert not deletion_jobs().exists()

    response = api_client_for(user("curator")).delete(url)
    assert response.status_code == 202, response.content
    job = deletion_jobs().get()
    assert job.params == {"target": "dataset", "dataset": vp.alpha.pk, "name": "alpha"}
    assert AuditLogEntry.objects.filter(action="dataset.deletion_requested",
                                        target=f"datasets.dataset:{vp.alpha.pk}").exists()


def test_a_dataset_is_found_only_in_its_own_project(vp, owner, api_client_for, tmp_path):
    other = build_viewer_project(owner, tmp_path / "other", name="Other", n_images=1, nuclei=3, size=64)
    response = api_client_for(owner).delete(f"/api/projects/{vp.project.pk}/datasets/{other.alpha.pk}/")
    assert response.status_code == 404
    assert response.json()["detail"] == "No such dataset in this project."


@pytest.mark.parametrize("kind, state", [("train", "running"), ("import", "queued"), ("predict", "running")])
def test_no_deletion_while_a_job_of_the_project_works(vp, owner, api_client_for, kind, state):
    busy = Job.objects.create(kind=kind, state=state, project=vp.project, created_by=owner)
    for url in (f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/", f"/api/projects/{vp.project.pk}/"):
        response = api_client_for(owner).delete(url)
        assert response.status_code == 409, url
        body = response.json()
        assert f"is {state} (job {busy.pk})" in body["detail"] and "Wait for it to finish or cancel it" in body["detail"]
        assert body["job_id"] == busy.pk
    assert not deletion_jobs().exists()


def test_an_inference_blocks_the_project_deletion_but_not_a_dataset(vp, owner, api_client_for):
    Job.objects.create(kind="infer", state="running", project=vp.project, created_by=owner)
    assert api_client_for(owner).delete(f"/api/projects/{vp.project.pk}/").status_code == 409
    assert api_client_for(owner).delete(f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").status_code == 202


def test_finished_jobs_do_not_block(vp, owner, api_client_for):
    for state in ("succeeded", "failed", "cancelled"):
        Job.objects.create(kind="train", state=state, project=vp.project, created_by=owner)
    assert api_client_for(owner).delete(f"/api/projects/{vp.project.pk}/").status_code == 202


def test_while_a_deletion_is_pending_nothing_new_starts(vp, owner, api_client_for):
    client = api_client_for(owner)
    assert client.delete(f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").status_code == 202
    pending = deletion_jobs().get()
    second = client.delete(f"/api/projects/{vp.project.pk}/datasets/{vp.beta.pk}/")
    assert second.status_code == 409
    assert f"the deletion of dataset 'alpha' of the project is queued (job {pending.pk})" in second.json()["detail"]
    again = client.delete(f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/")   # the same, asked twice
    assert again.status_code == 409 and again.json()["job_id"] == pending.pk
    assert again.json()["detail"] == f"Dataset 'alpha' is already being deleted (job {pending.pk}, queued)."
    train = client.post(f"/api/projects/{vp.project.pk}/train/", {}, format="json")
    assert train.status_code == 409
    assert train.json()["detail"].startswith("A training cannot start now: dataset 'alpha' is being deleted")
    imported = upload(client, vp.project.pk, zip_entries(seed_entries()), name="new", format="seed")
    assert imported.status_code == 409 and "An import cannot start now" in imported.json()["detail"]
    assert list(Job.objects.filter(project=vp.project).values_list("kind", flat=True)) == ["delete"]


def test_the_dataset_page_deletes_only_when_the_name_is_typed(vp):
    client = page_client("curator")
    page = client.get(f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").content.decode()
    assert 'id="delete-dataset"' in page and 'data-confirm-name="alpha"' in page
    url = f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/delete/"

    response = client.post(url, {"confirm_name": "Alpha"}, follow=True)
    assert "type its name exactly to confirm" in response.content.decode()
    assert not deletion_jobs().exists()

    response = client.post(url, {"confirm_name": "alpha"})
    job = deletion_jobs().get()
    assert response.status_code == 302 and response["Location"] == f"/projects/{vp.project.pk}/"
    assert job.params["dataset"] == vp.alpha.pk and job.created_by == user("curator")
    assert Dataset.objects.filter(pk=vp.alpha.pk).exists()


def test_reviewers_get_no_dataset_delete_form_and_are_refused(vp):
    client = page_client("reviewer")
    page = client.get(f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").content.decode()
    assert 'id="delete-dataset"' not in page
    response = client.post(f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/delete/", {"confirm_name": "alpha"})
    assert response.status_code == 403
    assert not deletion_jobs().exists()


def test_the_project_page_deletes_the_project_for_admins_only(vp, owner):
    curator_page = page_client("curator").get(f"/projects/{vp.project.pk}/").content.decode()
    assert 'id="delete-project"' not in curator_page
    assert page_client("curator").post(f"/projects/{vp.project.pk}/delete/",
                                       {"confirm_name": vp.project.name}).status_code == 403

    client = page_client("owner")
    assert f'data-confirm-name="{vp.project.name}"' in client.get(f"/projects/{vp.project.pk}/").content.decode()
    client.post(f"/projects/{vp.project.pk}/delete/", {"confirm_name": "Colon"})
    assert not deletion_jobs().exists()
    response = client.post(f"/projects/{vp.project.pk}/delete/", {"confirm_name": vp.project.name})
    job = deletion_jobs().get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"


def test_the_pages_say_why_a_deletion_must_wait(vp, owner):
    busy = Job.objects.create(kind="train", state="running", project=vp.project, created_by=owner)
    client = page_client("owner")
    page = client.get(f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").content.decode()
    assert "Not now: a training is running" in page and 'name="confirm_name"' not in page
    response = client.post(f"/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/delete/", {"confirm_name": "alpha"},
                           follow=True)
    assert f"is running (job {busy.pk})" in response.content.decode()
    assert not deletion_jobs().exists()


def test_a_dataset_deleted_meanwhile_is_not_deleted_twice(vp, owner, api_client_for):
    """The second of two DELETEs looked its dataset up before the first one's job finished: under the lock it
    finds the dataset gone and answers 404, not a second deletion job."""
    from webapp.core.domain_errors import NotFound
    from webapp.datasets.operations import do_request_dataset_deletion

    assert api_client_for(owner).delete(f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").status_code == 202
    first = deletion_jobs().get()
    stale = Dataset.objects.get(pk=vp.alpha.pk)     # the second request's lookup, before the job ran
    Job.objects.filter(pk=first.pk).update(state="succeeded")
    Dataset.objects.filter(pk=vp.alpha.pk).delete()
    with pytest.raises(NotFound, match="Dataset 'alpha' was deleted meanwhile."):
        do_request_dataset_deletion(stale, actor=owner)
    assert deletion_jobs().count() == 1
    assert api_client_for(owner).delete(f"/api/projects/{vp.project.pk}/datasets/{vp.alpha.pk}/").status_code == 404
