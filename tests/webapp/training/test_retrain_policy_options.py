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
