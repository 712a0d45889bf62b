"""Renaming a dataset and changing its provenance: curators and admins, one audit row, names unique in the project."""

import pytest
from django.test import Client

from webapp.core.models import AuditLogEntry
from webapp.datasets.models import Dataset, LabelSet
from webapp.jobs.models import Job
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member, make_user):
    project = do_create_project("edit", actor=owner)
    do_set_membership(project, member, Role.CURATOR, actor=owner)
    do_set_membership(project, make_user("reviewer"), Role.REVIEWER, actor=owner)
    return project


@pytest.fixture
def dataset(project, owner):
    label_set = LabelSet.objects.create(project=project, name="consep")
    return Dataset.objects.create(project=project, name="consep-train", label_set=label_set, format="hovernet",
                                  provenance="UHCW", storage_dir="nowhere", uploaded_by=owner)


def url(dataset) -> str:
    return f"/api/projects/{dataset.project_id}/datasets/{dataset.pk}/"


def test_a_curator_renames_a_dataset_and_its_label_set_stays(dataset, member, api_client_for):
    response = api_client_for(member).patch(url(dataset), {"name": "CoNSeP train", "provenance": "UHCW, 40x"},
                                            format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["name"], body["provenance"], body["label_set"]) == ("CoNSeP train", "UHCW, 40x", "consep")
    dataset.refresh_from_db()
    assert (dataset.name, dataset.provenance, dataset.storage_dir) == ("CoNSeP train", "UHCW, 40x", "nowhere")
    entry = AuditLogEntry.objects.get(action="dataset.edited")
    assert entry.actor == member and entry.target == f"datasets.dataset:{dataset.pk}"
    assert entry.details == {"name_before": "consep-train", "name": "CoNSeP train",
                             "provenance_before": "UHCW", "provenance": "UHCW, 40x"}


def test_reviewers_and_outsiders_cannot_rename(dataset, outsider, api_client_for):
    from django.contrib.auth import get_user_model

    reviewer = get_user_model().objects.get(username="reviewer")
    response = api_client_for(reviewer).patch(url(dataset), {"name": "mine"}, format="json")
    assert response.status_code == 403 and "curator role" in response.json()["detail"]
    assert api_client_for(outsider).patch(url(dataset), {"name": "mine"}, format="json").status_code == 404
    dataset.refresh_from_db()
    assert dataset.name == "consep-train"
    assert not AuditLogEntry.objects.filter(action="dataset.edited").exists()


def test_a_name_the_project_has_or_is_importing_is_refused(project, dataset, owner, api_client_for):
    Dataset.objects.create(project=project, name="pannuke", format="coco", storage_dir="elsewhere")
    client = api_client_for(owner)
    response = client.patch(url(dataset), {"name": "pannuke"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "name: project 'edit' already has a dataset named 'pannuke'"
    job = Job.objects.create(kind=Job.Kind.IMPORT, project=project, params={"name": "nucls"})
    response = client.patch(url(dataset), {"name": "nucls"}, format="json")
    assert response.status_code == 400
    assert f"a dataset named 'nucls' is being imported into project 'edit' (job {job.pk})" in response.json()["detail"]
    for body, words in (({"name": " "}, "name: the name is empty"), ({"nmae": "x"}, "unknown field(s) ['nmae']")):
        response = client.patch(url(dataset), body, format="json")
        assert response.status_code == 400 and words in response.json()["detail"]
    dataset.refresh_from_db()
    assert dataset.name == "consep-train"
    # Its own name again is no clash; nothing changed, so nothing is written.
    assert client.patch(url(dataset), {"name": "consep-train"}, format="json").status_code == 200
    assert not AuditLogEntry.objects.filter(action="dataset.edited").exists()


def test_a_dataset_of_another_project_is_not_found(dataset, owner, api_client_for):
    other = do_create_project("other", actor=owner)
    response = api_client_for(owner).patch(f"/api/projects/{other.pk}/datasets/{dataset.pk}/", {"name": "x"},
                                           format="json")
    assert response.status_code == 404 and response.json()["detail"] == "No such dataset in this project."


def test_the_dataset_page_edits_for_curators(dataset, member):
    from django.contrib.auth import get_user_model

    curator = Client()
    curator.force_login(member)
    page_url = f"/projects/{dataset.project_id}/datasets/{dataset.pk}/"
    assert 'id="edit-dataset"' in curator.get(page_url).content.decode()
    response = curator.post(page_url + "edit/", {"name": "CoNSeP <b>", "provenance": ""}, follow=True)
    html = response.content.decode()
    assert "Dataset &#x27;CoNSeP &lt;b&gt;&#x27; saved." in html and "<h1>CoNSeP &lt;b&gt;</h1>" in html
    dataset.refresh_from_db()
    assert (dataset.name, dataset.provenance) == ("CoNSeP <b>", "")

    reviewer = Client()
    reviewer.force_login(get_user_model().objects.get(username="reviewer"))
    assert 'id="edit-dataset"' not in reviewer.get(page_url).content.decode()
    assert reviewer.post(page_url + "edit/", {"name": "mine"}).status_code == 403
    dataset.refresh_from_db()
    assert dataset.name == "CoNSeP <b>"


def test_names_are_unique_in_any_case_but_a_dataset_may_change_its_own_case(project, dataset, owner,
                                                                            api_client_for):
    Dataset.objects.create(project=project, name="PanNuke sample", format="coco", storage_dir="elsewhere")
    client = api_client_for(owner)
    response = client.patch(url(dataset), {"name": "pannuke SAMPLE"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "name: project 'edit' already has a dataset named 'PanNuke sample'"
    assert client.patch(url(dataset), {"name": "CONSEP-train\u200b"}, format="json").json()["name"] == "CONSEP-train"
    # Any script's letters, on SQLite too (whose case-insensitive match folds ASCII only).
    Dataset.objects.create(project=project, name="Merge Ω Straße", format="coco", storage_dir="elsewhere2")
    greek = client.patch(url(dataset), {"name": "merge ω STRASSE"}, format="json")
    assert greek.status_code == 400 and "already has a dataset named 'Merge Ω Straße'" in greek.json()["detail"]


def test_no_rename_while_a_deletion_is_pending(project, dataset, owner, api_client_for):
    job = Job.objects.create(kind=Job.Kind.DELETE, project=project, params={"target": "dataset", "name": "x"})
    response = api_client_for(owner).patch(url(dataset), {"name": "late"}, format="json")
    assert response.status_code == 409
    assert f"dataset 'x' is being deleted (job {job.pk}, queued)" in response.json()["detail"]
    dataset.refresh_from_db()
    assert dataset.name == "consep-train"
    page = Client()
    page.force_login(owner)
    response = page.post(f"/projects/{project.pk}/datasets/{dataset.pk}/edit/", {"name": "late"}, follow=True)
    assert response.status_code == 200 and "is being deleted" in response.content.decode()   # was a 500


def test_provenance_keeps_its_lines_and_has_a_ceiling(dataset, owner, api_client_for):
    client = api_client_for(owner)
    body = client.patch(url(dataset), {"provenance": "NuCLS\r\nCC0 1.0"}, format="json").json()
    assert body["provenance"] == "NuCLS\nCC0 1.0"
    response = client.patch(url(dataset), {"provenance": "p" * 10_001}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "provenance: A provenance note has at most 10000 characters (10001 given)."
