"""Jobs follow the roles of their project (issue 13, failure 2).

A viewer could cancel a curator's training, a removed member could still read and cancel their old
jobs, and anyone could queue worker diagnostics (which reveal the worker's PID and versions).
"""

import pytest

from webapp.jobs.models import Job
from webapp.projects.models import Role
from webapp.projects.operations import do_create_project, do_remove_member, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(owner, make_user):
    project = do_create_project("jobs", actor=owner)
    people = {"owner": owner}
    for role in (Role.CURATOR, Role.REVIEWER, Role.VIEWER):
        people[role.value] = make_user(role.value)
        do_set_membership(project, people[role.value], role, actor=owner)
    people["outsider"] = make_user("stranger")
    training = Job.objects.create(kind=Job.Kind.TRAIN, project=project, created_by=people["curator"])
    inference = Job.objects.create(kind=Job.Kind.INFER, project=project, created_by=people["reviewer"])
    return project, people, training, inference


def cancel(api_client_for, user, job):
    return api_client_for(user).post(f"/api/jobs/{job.pk}/cancel/")


def test_a_viewer_cannot_cancel_a_curators_training(team, api_client_for):
    project, people, training, _ = team
    response = cancel(api_client_for, people["viewer"], training)
    assert response.status_code == 403, response.content
    assert "curator role" in response.json()["detail"]
    training.refresh_from_db()
    assert training.state == Job.State.QUEUED and not training.cancel_requested
    # ...but may still follow it.
    assert api_client_for(people["viewer"]).get(f"/api/jobs/{training.pk}/").json()["state"] == "queued"


def test_a_reviewer_cancels_their_own_inference_but_not_others_jobs(team, api_client_for):
    project, people, training, inference = team
    assert cancel(api_client_for, people["reviewer"], training).status_code == 403
    response = cancel(api_client_for, people["reviewer"], inference)
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "cancelled"


def test_curators_and_the_owner_cancel_any_job_of_the_project(team, api_client_for):
    project, people, training, inference = team
    assert cancel(api_client_for, people["curator"], inference).json()["state"] == "cancelled"
    assert cancel(api_client_for, people["owner"], training).json()["state"] == "cancelled"


def test_outsiders_see_no_job_at_all(team, api_client_for, client):
    project, people, training, _ = team
    outsider = api_client_for(people["outsider"])
    assert outsider.get(f"/api/jobs/{training.pk}/").status_code == 404
    assert cancel(api_client_for, people["outsider"], training).status_code == 404
    assert outsider.get("/api/jobs/").json()["results"] == []
    client.force_login(people["outsider"])
    assert client.get(f"/jobs/{training.pk}/").status_code == 404


def test_a_removed_member_loses_their_old_jobs(team, api_client_for, client):
    project, people, _, inference = team
    reviewer = people["reviewer"]
    do_remove_member(project, reviewer, actor=people["owner"])
    api = api_client_for(reviewer)
    assert api.get(f"/api/jobs/{inference.pk}/").status_code == 404
    assert api.get(f"/api/jobs/{inference.pk}/files/overlay.png").status_code == 404
    assert cancel(api_client_for, reviewer, inference).status_code == 404
    assert api.get("/api/jobs/").json()["results"] == []
    client.force_login(reviewer)
    assert client.get(f"/jobs/{inference.pk}/").status_code == 404
    assert f"/jobs/{inference.pk}/" not in client.get("/").content.decode()  # nor on the home page
    inference.refresh_from_db()
    assert inference.state == Job.State.QUEUED and not inference.cancel_requested


def test_a_demoted_member_cannot_cancel_what_their_new_role_could_not_start(team, api_client_for):
    project, people, _, inference = team
    do_set_membership(project, people["reviewer"], Role.VIEWER, actor=people["owner"])
    assert cancel(api_client_for, people["reviewer"], inference).status_code == 403


def test_only_staff_queue_diagnostics(team, api_client_for, make_user):
    _, people, _, _ = team
    for user in (people["outsider"], people["owner"]):
        response = api_client_for(user).post("/api/jobs/", {"kind": "diagnostics"}, format="json")
        assert response.status_code == 403, response.content
        assert "staff" in response.json()["detail"]
    assert not Job.objects.filter(kind=Job.Kind.DIAGNOSTICS).exists()
    staff = make_user("operator", is_staff=True)
    response = api_client_for(staff).post("/api/jobs/", {"kind": "diagnostics"}, format="json")
    assert response.status_code == 202, response.content
    diagnostics = Job.objects.get(kind=Job.Kind.DIAGNOSTICS)
    # A diagnostics job belongs to no project: staff only.
    assert api_client_for(staff).get(f"/api/jobs/{diagnostics.pk}/").status_code == 200
    assert api_client_for(people["owner"]).get(f"/api/jobs/{diagnostics.pk}/").status_code == 404


def test_the_job_page_offers_cancel_to_whoever_may_cancel_while_the_job_has_not_ended(team, client):
    """Pages that refuse something "while job N runs" say "wait for it or cancel it" and link the job's page: the
    page itself offers the cancel (only trainings had a button, on the project page)."""
    project, people, training, inference = team

    def offered(user, job) -> bool:
        client.force_login(user)
        response = client.get(f"/jobs/{job.pk}/")
        assert response.status_code == 200
        return 'id="cancel-job"' in response.content.decode()

    assert offered(people["curator"], training) and offered(people["owner"], training)
    assert not offered(people["reviewer"], training) and not offered(people["viewer"], training)
    assert offered(people["reviewer"], inference)   # they started it
    page = client.get(f"/jobs/{inference.pk}/").content.decode()
    assert f'data-cancel-url="/api/jobs/{inference.pk}/cancel/"' in page and "No files are written." in page
    Job.objects.filter(pk=training.pk).update(state=Job.State.SUCCEEDED)
    training.refresh_from_db()
    assert not offered(people["owner"], training)


@pytest.mark.parametrize("state", [Job.State.SUCCEEDED, Job.State.FAILED, Job.State.CANCELLED])
def test_cancelling_a_job_that_has_ended_is_a_conflict_naming_its_state(team, api_client_for, state):
    """It answered 200 with the job as it was: a script could not tell that nothing had been cancelled."""
    from webapp.core.models import AuditLogEntry

    project, people, training, _ = team
    Job.objects.filter(pk=training.pk).update(state=state)
    response = cancel(api_client_for, people["curator"], training)
    assert response.status_code == 409, response.content
    assert response.json() == {"detail": f"Job {training.pk} has already ended ({state}): there is nothing to "
                                         "cancel.", "state": state}
    training.refresh_from_db()
    assert training.state == state and not training.cancel_requested
    assert not AuditLogEntry.objects.filter(action="job.cancel_requested").exists()


def test_a_second_cancel_while_the_first_is_under_way_is_no_error(team, api_client_for):
    project, people, training, _ = team
    from django.utils import timezone

    Job.objects.filter(pk=training.pk).update(state=Job.State.RUNNING, heartbeat_at=timezone.now())   # a live worker
    first = cancel(api_client_for, people["curator"], training)
    second = cancel(api_client_for, people["curator"], training)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["state"] == "running" and second.json()["cancel_requested"]
