"""The retraining policy's training options follow the train API's own validation (one serializer)."""

import pytest

from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.training.models import RetrainPolicy

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("options, problem", [
    ({"epochs": 999_999}, "less than or equal to 1000"),
    ({"epochs": 0}, "greater than or equal to 1"),
    ({"batch_size": 1}, "greater than or equal to 2"),
    ({"stages": ["completion", "sparse"]}, "stages must be a subset"),
    ({"epoch": 3}, "unknown training option(s) ['epoch']"),
])
def test_policy_options_the_train_api_refuses_are_refused(api_client_for, owner, options, problem):
    project = do_create_project("policy", actor=owner)
    client = api_client_for(owner)
    response = client.put(f"/api/projects/{project.pk}/retrain-policy/", {"enabled": True, "options": options},
                          format="json")
    assert response.status_code == 400, response.content
    assert "options" in response.json()["detail"] and problem in response.json()["detail"], response.json()
    assert not RetrainPolicy.objects.filter(project=project).exists()
    # The same options are refused by the train API itself (a misspelt one too): no job is queued.
    train = client.post(f"/api/projects/{project.pk}/train/", options, format="json")
    assert train.status_code == 400 and problem in train.json()["detail"], train.content
    assert not Job.objects.filter(project=project).exists()


def test_valid_policy_options_are_stored_and_read_back(api_client_for, owner):
    project = do_create_project("policy", actor=owner)
    client = api_client_for(owner)
    options = {"epochs": 1000, "stages": ["sparse", "completion"], "batch_size": 64}
    response = client.put(f"/api/projects/{project.pk}/retrain-policy/", {"enabled": True, "options": options},
                          format="json")
    assert response.status_code == 200, response.content
    assert response.json()["options"] == options
    assert RetrainPolicy.objects.get(project=project).options == options
    assert client.get(f"/api/projects/{project.pk}/retrain-policy/").json()["options"] == options


def test_patch_changes_only_the_fields_it_gives_and_put_replaces(api_client_for, owner):
    """A script's PUT {"min_new_reviews": null} turned the guard and the cron off, and the policy on: PUT replaces
    (as its documentation says now); PATCH is there to change one field."""
    project = do_create_project("policy", actor=owner)
    client = api_client_for(owner)
    url = f"/api/projects/{project.pk}/retrain-policy/"
    saved = {"enabled": False, "min_new_reviews": 40, "check_every_minutes": 30, "cron": "0 3 * * 0",
             "options": {"epochs": 3}, "activate_only_if_not_lower": True}
    assert client.put(url, saved, format="json").status_code == 200
    response = client.patch(url, {"min_new_reviews": 80}, format="json")
    assert response.status_code == 200, response.content
    assert {field: response.json()[field] for field in saved} == {**saved, "min_new_reviews": 80}
    policy = RetrainPolicy.objects.get(project=project)
    assert (policy.min_new_reviews, policy.cron, policy.activate_only_if_not_lower, policy.enabled) == (
        80, "0 3 * * 0", True, False)
    assert client.patch(url, {"min_new_reveiws": 1}, format="json").status_code == 400   # misspelt: nothing changes
    replaced = client.put(url, {"min_new_reviews": None}, format="json").json()
    assert (replaced["cron"], replaced["activate_only_if_not_lower"], replaced["enabled"]) == ("", False, True)


def test_a_first_patch_keeps_the_policy_off_as_it_was_shown(api_client_for, owner):
    """Never saved, the policy reads enabled: false; a first PATCH of the schedule alone saved it on, and a
    nightly training started unattended."""
    project = do_create_project("first patch", actor=owner)
    client = api_client_for(owner)
    url = f"/api/projects/{project.pk}/retrain-policy/"
    assert client.get(url).json()["enabled"] is False
    patched = client.patch(url, {"cron": "0 3 * * *"}, format="json").json()
    assert (patched["enabled"], patched["saved"], patched["cron"]) == (False, True, "0 3 * * *")
    assert RetrainPolicy.objects.get(project=project).enabled is False
    assert client.patch(url, {"enabled": True}, format="json").json()["enabled"] is True
