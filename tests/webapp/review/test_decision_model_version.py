"""A decision is scored against the prediction the reviewer saw: the version they name (model_version), not
whichever version is active when the save arrives (a curator may make another active in between, or a new
version may be active before its predictions are stored)."""

import pytest
from django.utils import timezone

from tests.webapp.review_project import add_predictions, unlabelled_in
from webapp.datasets.models import Label, LabelClass
from webapp.training.models import ModelVersion
from webapp.training.operations import do_activate_version

pytestmark = pytest.mark.django_db


def class_name(label_set, index: int) -> str:
    return LabelClass.objects.get(label_set=label_set, index=index).name


@pytest.fixture
def v2(rp, users):
    """v2, with predictions of its own that differ from v1's for some nuclei, made active."""
    version = ModelVersion.objects.create(project=rp.project, number=2, checkpoint_file="models/v2.pt",
                                          data_snapshot_at=timezone.now(), label_sets=rp.version.label_sets)
    found = add_predictions(version, seed=7)
    do_activate_version(version, actor=users["owner"])
    return version, found


def differing_nucleus(rp, v2_found) -> int:
    return next(n for n in unlabelled_in(rp, rp.breast_set)
                if rp.predictions[(n, rp.breast_set.pk)].class_index != v2_found[(n, rp.breast_set.pk)].class_index)


def test_a_decision_is_scored_against_the_version_the_reviewer_saw(rp, users, api_client_for, v2):
    version2, found2 = v2
    nucleus = differing_nucleus(rp, found2)
    seen = rp.predictions[(nucleus, rp.breast_set.pk)].class_index   # v1's prediction, on screen before v2 went active
    response = api_client_for(users["reviewer"]).post(f"/api/nuclei/{nucleus}/labels/", {
        "label_set": "breast", "class_name": class_name(rp.breast_set, seen), "version": None, "model_version": 1,
    }, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["predicted_class"] == seen and response.json()["agrees_with_prediction"] is True
    label = Label.objects.get(pk=response.json()["id"])
    assert label.model_version_id == rp.version.pk


def test_without_model_version_the_active_versions_prediction_counts(rp, users, api_client_for, v2):
    version2, found2 = v2
    nucleus = differing_nucleus(rp, found2)
    seen = rp.predictions[(nucleus, rp.breast_set.pk)].class_index
    response = api_client_for(users["reviewer"]).post(f"/api/nuclei/{nucleus}/labels/", {
        "label_set": "breast", "class_name": class_name(rp.breast_set, seen), "version": None}, format="json")
    assert response.status_code == 201
    assert response.json()["agrees_with_prediction"] is False   # v2 predicted another class
    assert Label.objects.get(pk=response.json()["id"]).model_version_id == version2.pk


def test_the_gallery_names_the_version_of_each_decision_too(rp, users, api_client_for, v2):
    version2, found2 = v2
    nucleus = differing_nucleus(rp, found2)
    seen = rp.predictions[(nucleus, rp.breast_set.pk)].class_index
    response = api_client_for(users["reviewer"]).post(f"/api/projects/{rp.project.pk}/review/bulk/", {
        "label_set": "breast",
        "decisions": [{"nucleus": nucleus, "class_name": class_name(rp.breast_set, seen), "version": None,
                       "model_version": 1}]}, format="json")
    assert response.status_code == 200, response.content
    assert Label.objects.filter(nucleus_id=nucleus, label_set=rp.breast_set).get().model_version_id == rp.version.pk


def test_a_version_the_project_does_not_have_is_a_400_naming_the_field(rp, users, api_client_for):
    nucleus = unlabelled_in(rp, rp.breast_set)[0]
    client = api_client_for(users["reviewer"])
    response = client.post(f"/api/nuclei/{nucleus}/labels/", {
        "label_set": "breast", "class_index": 0, "version": None, "model_version": 9}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"model_version": ["this project has no model version 9"]}
    bulk = client.post(f"/api/projects/{rp.project.pk}/review/bulk/", {
        "label_set": "breast", "decisions": [{"nucleus": nucleus, "class_index": 0, "version": None,
                                              "model_version": 9}]}, format="json")
    assert bulk.json()["results"][0]["status"] == 400
    assert not Label.objects.filter(nucleus_id=nucleus, label_set=rp.breast_set, source="review").exists()
