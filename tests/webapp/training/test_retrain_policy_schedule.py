"""The retraining policy's schedule: bad cron expressions are field errors, the next run time and time zone."""

from datetime import datetime, timedelta, timezone

import pytest

from webapp.projects.operations import do_create_project
from webapp.training.models import RetrainPolicy

pytestmark = pytest.mark.django_db(transaction=True)


def next_sunday_3am(now: datetime) -> datetime:
    day = now.replace(hour=3, minute=0, second=0, microsecond=0)
    while day <= now or day.weekday() != 6:
        day += timedelta(days=1)
    return day


def test_an_unsaved_policy_is_not_enabled(api_client_for, owner):
    project = do_create_project("policy", actor=owner)
    policy = api_client_for(owner).get(f"/api/projects/{project.pk}/retrain-policy/").json()
    assert policy["enabled"] is False and policy["saved"] is False
    assert policy["next_run_at"] is None and policy["time_zone"] == "UTC"
    assert policy["schedule_text"].startswith("Not saved yet: nothing is scheduled.")


@pytest.mark.parametrize("cron, problem", [
    ("99 * * * *", "minute '99' is not valid"),
    ("0 25 * * *", "hour '25' is not valid"),
    ("0 3 * * 8", "day of week '8' is not valid"),
    ("0 3 31 2 *", "never occurs"),
    ("0 3 * *", "has 4 fields; a schedule needs five"),
    ("every sunday", "has 2 fields"),
    ("a b c d e", "minute 'a' is not valid"),
])
def test_a_bad_cron_expression_is_a_field_error_and_nothing_is_saved(api_client_for, owner, cron, problem):
    from django_celery_beat.models import PeriodicTask

    project = do_create_project("policy", actor=owner)
    response = api_client_for(owner).put(f"/api/projects/{project.pk}/retrain-policy/",
                                         {"enabled": True, "cron": cron}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body["errors"]) == {"cron"} and problem in body["errors"]["cron"][0], body
    assert body["detail"].startswith("cron: ")
    assert not RetrainPolicy.objects.filter(project=project).exists()
    assert not PeriodicTask.objects.filter(name__endswith=f"-project-{project.pk}").exists()


def test_a_saved_schedule_says_when_it_next_runs_and_in_which_time_zone(api_client_for, owner):
    from django_celery_beat.models import PeriodicTask

    project = do_create_project("policy", actor=owner)
    client = api_client_for(owner)
    before = datetime.now(timezone.utc)
    response = client.put(f"/api/projects/{project.pk}/retrain-policy/",
                          {"enabled": True, "cron": " 0  3 * * 0 ", "options": {"stages": ["sparse", "completion"],
                                                                              "epochs": 3}}, format="json")
    assert response.status_code == 200, response.content
    policy = response.json()
    assert policy["cron"] == "0 3 * * 0" and policy["saved"] and policy["enabled"]
    assert policy["options"] == {"stages": ["sparse", "completion"], "epochs": 3}
    assert datetime.fromisoformat(policy["next_run_at"]) == next_sunday_3am(before)
    assert policy["time_zone"] == "UTC"
    assert f"Next scheduled training: {next_sunday_3am(before):%a %Y-%m-%d} 03:00 UTC." in policy["schedule_text"]
    task = PeriodicTask.objects.get(name=f"retrain-cron-project-{project.pk}")
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "3", "0") and task.enabled
    assert RetrainPolicy.objects.get(project=project).options == {"stages": ["sparse", "completion"], "epochs": 3}

    switched_off = client.put(f"/api/projects/{project.pk}/retrain-policy/",
                              {"enabled": False, "cron": "0 3 * * 0", "min_new_reviews": 5}, format="json").json()
    assert switched_off["next_run_at"] is None and switched_off["next_check_at"] is None
    assert "off (not enabled)" in switched_off["schedule_text"]
    threshold = client.put(f"/api/projects/{project.pk}/retrain-policy/",
                           {"enabled": True, "min_new_reviews": 5, "check_every_minutes": 30}, format="json").json()
    assert threshold["next_run_at"] is None and threshold["next_check_at"] is not None
    assert "Next check for 5 new reviewed labels" in threshold["schedule_text"]


def test_a_new_threshold_check_is_announced_when_beat_first_runs_it_not_now(api_client_for, owner):
    """Beat first runs a check that never ran an interval after its task was saved: the form said "now" at
    every reload, so a curator waited in vain for a training that was 15 minutes away."""
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import ModelEntry

    from workers.celery import app

    project = do_create_project("policy", actor=owner)
    policy = api_client_for(owner).put(f"/api/projects/{project.pk}/retrain-policy/",
                                       {"enabled": True, "min_new_reviews": 5, "check_every_minutes": 30},
                                       format="json").json()
    task = PeriodicTask.objects.get(name=f"retrain-check-project-{project.pk}")
    assert task.last_run_at is None
    announced = datetime.fromisoformat(policy["next_check_at"])
    assert announced >= task.date_changed + timedelta(minutes=30) - timedelta(seconds=1), policy
    # The scheduler's own reckoning of the same row: due in about 30 minutes, not at its next tick.
    due, seconds_left = ModelEntry(task, app=app).is_due()
    assert not due
    assert abs((datetime.now(timezone.utc) + timedelta(seconds=seconds_left) - announced).total_seconds()) < 5
    assert f"{announced:%H:%M}" in policy["schedule_text"]

    # Once it ran, the next check is an interval after that run.
    ran = datetime.now(timezone.utc) - timedelta(minutes=10)
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=ran)
    again = api_client_for(owner).get(f"/api/projects/{project.pk}/retrain-policy/").json()
    assert abs((datetime.fromisoformat(again["next_check_at"]) - (ran + timedelta(minutes=30))).total_seconds()) < 2
