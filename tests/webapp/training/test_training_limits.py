"""Options with a ceiling: a training's draws per epoch and stages, the retraining policy's check interval and
review count. Each was accepted once and then failed in the worker or in beat (a 745 GiB allocation, a check sent
without pause, a next-run date out of range); now the request is refused, naming the field, and nothing is made."""

import pytest

from mlcore.config import MAX_SAMPLES_PER_EPOCH, ConfigError, TrainConfig
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.training.models import RetrainPolicy

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def small_project(owner, tmp_path):
    return two_taxonomy_project(owner, tmp_path, images=1, nuclei=60)


@pytest.mark.parametrize("options, field, problem", [
    ({"samples_per_epoch": 99999999999}, "samples_per_epoch", f"less than or equal to {MAX_SAMPLES_PER_EPOCH}"),
    ({"samples_per_epoch": 0}, "samples_per_epoch", "greater than or equal to 1"),
    ({"stages": []}, "stages", "choose at least one stage"),
    ({"grayscale": 1.5}, "grayscale", "less than or equal to 1"),
])
def test_a_training_beyond_the_limits_is_refused_and_no_job_is_made(small_project, api_client_for, owner, options,
                                                                   field, problem):
    client = api_client_for(owner)
    response = client.post(f"/api/projects/{small_project.pk}/train/", options, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(f"{field}: ") and problem in response.json()["detail"]
    assert not Job.objects.filter(project=small_project, kind=Job.Kind.TRAIN).exists()
    estimate = client.get(f"/api/projects/{small_project.pk}/train/estimate/",
                          {"samples_per_epoch": 99999999999})
    assert estimate.status_code == 400 and "samples_per_epoch" in estimate.json()["detail"]
    # DRF's ?format= (which every GET takes) is no option of the training: the refusal still names the field at
    # fault, not "unknown field(s) ['format']".
    estimate = client.get(f"/api/projects/{small_project.pk}/train/estimate/",
                          {"samples_per_epoch": 99999999999, "format": "json"})
    assert estimate.status_code == 400 and estimate.json()["detail"].startswith("samples_per_epoch"), estimate.json()


def test_the_largest_draws_per_epoch_are_accepted_and_the_config_refuses_more():
    assert TrainConfig.from_dict({"samples_per_epoch": MAX_SAMPLES_PER_EPOCH}).samples_per_epoch == MAX_SAMPLES_PER_EPOCH
    with pytest.raises(ConfigError, match="sampling.samples_per_epoch"):
        TrainConfig.from_dict({"sampling": {"samples_per_epoch": MAX_SAMPLES_PER_EPOCH + 1}})


@pytest.mark.parametrize("policy, field", [
    ({"check_every_minutes": 0}, "check_every_minutes"),
    ({"check_every_minutes": 99999999999}, "check_every_minutes"),
    ({"check_every_minutes": RetrainPolicy.MAX_CHECK_EVERY_MINUTES + 1}, "check_every_minutes"),
    ({"min_new_reviews": 99999999999}, "min_new_reviews"),
])
def test_a_policy_beyond_the_limits_is_refused_and_nothing_is_scheduled(api_client_for, owner, policy, field):
    from django_celery_beat.models import PeriodicTask

    project = do_create_project("policy", actor=owner)
    response = api_client_for(owner).put(f"/api/projects/{project.pk}/retrain-policy/",
                                         {"enabled": True, "min_new_reviews": 10, **policy}, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == {field}
    assert not RetrainPolicy.objects.filter(project=project).exists()
    assert not PeriodicTask.objects.filter(name__endswith=f"-project-{project.pk}").exists()


def test_a_weekly_check_is_the_longest_interval_and_is_scheduled(api_client_for, owner):
    from django_celery_beat.models import PeriodicTask

    project = do_create_project("policy", actor=owner)
    response = api_client_for(owner).put(f"/api/projects/{project.pk}/retrain-policy/", {
        "enabled": True, "min_new_reviews": 10, "check_every_minutes": RetrainPolicy.MAX_CHECK_EVERY_MINUTES},
        format="json")
    assert response.status_code == 200, response.content
    check = PeriodicTask.objects.get(name=f"retrain-check-project-{project.pk}")
    assert check.interval.every == 7 * 24 * 60 and check.interval.period == "minutes"


def test_the_forms_carry_the_same_ceilings(small_project, owner, client):
    client.force_login(owner)
    page = client.get(f"/projects/{small_project.pk}/").content.decode()
    assert f'name="samples_per_epoch" min="1" max="{MAX_SAMPLES_PER_EPOCH}"' in page
    assert f'name="check_every_minutes" min="1" max="{RetrainPolicy.MAX_CHECK_EVERY_MINUTES}"' in page
    assert f'name="min_new_reviews" min="1" max="{RetrainPolicy.MAX_MIN_NEW_REVIEWS}"' in page
    assert 'name="grayscale" min="0" max="1" step="0.05" value="0.0"' in page     # off, as TrainConfig says
