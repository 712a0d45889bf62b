"""A misspelt field in a write's body is a 400 that names it and lists the allowed ones, on every write that
starts work or records a decision: the upload's ``labeled=false`` imported a labelled dataset, an inference's
``ttta`` ran without test-time augmentation, a decision's ``second_opinon`` answered a bare 409. A page's form
sent as it is (with Django's CSRF token field) still goes through."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from mlcore.examples import example_zip_bytes
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_workers(monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)


def refused(response, field: str) -> str:
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert f"['{field}']" in detail and "allowed:" in detail, detail
    return detail


def test_misspelt_fields_are_refused_where_work_starts_or_a_decision_is_made(rp, users, api_client_for):
    project, owner = rp.project, users["owner"]
    client = api_client_for(owner)
    upload = {"name": "typo", "labeled": "false", "archive": SimpleUploadedFile("d.zip", example_zip_bytes("seed"))}
    detail = refused(client.post(f"/api/projects/{project.pk}/datasets/", upload, format="multipart"), "labeled")
    assert "'labelled'" in detail
    nucleus = rp.project.datasets.first().images.first().nuclei.first()
    refused(client.post(f"/api/nuclei/{nucleus.pk}/labels/", {"label_set": "breast", "class_index": 0,
                                                                "version": None, "second_opinon": True},
                        format="json"), "second_opinon")
    refused(client.post(f"/api/projects/{project.pk}/review/bulk/", {
        "label_set": "breast", "decisions": [{"nucleus": nucleus.pk, "class_idx": 0, "version": None}]},
        format="json"), "class_idx")
    refused(client.post(f"/api/projects/{project.pk}/review/undo/", {"labelset": "breast"}, format="json"),
            "labelset")
    refused(client.post(f"/api/projects/{project.pk}/infer/", {"ttta": "true"}, format="multipart"), "ttta")
    assert not Job.objects.filter(project=project).exclude(kind=Job.Kind.TRAIN).exists()


def test_the_upload_forms_csrf_field_is_not_a_misspelling(rp, users, client):
    client.force_login(users["owner"])
    response = client.post(f"/api/projects/{rp.project.pk}/datasets/", {
        "csrfmiddlewaretoken": "x" * 64, "name": "from the page",
        "archive": SimpleUploadedFile("d.zip", example_zip_bytes("seed"))}, HTTP_ACCEPT="application/json")
    assert response.status_code == 202, response.content
    assert Job.objects.get(pk=response.json()["id"]).params["name"] == "from the page"
