"""GET /api/jobs/ filtered by state, kind and project, as a script waiting for its trainings asks; a filter value
that names nothing is a 400 that lists the ones there are, and filters never widen what a user may see."""

import pytest

from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project

pytestmark = pytest.mark.django_db


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {job["id"] for job in response.json()["results"]}


def test_the_job_list_filters_by_state_kind_and_project(api_client_for, owner, outsider):
    mine, other = do_create_project("mine", actor=owner), do_create_project("other", actor=owner)
    theirs = do_create_project("theirs", actor=outsider)

    def make(project, kind, state) -> int:
        return Job.objects.create(project=project, kind=kind, state=state).pk

    running_train = make(mine, Job.Kind.TRAIN, Job.State.RUNNING)
    done_train = make(mine, Job.Kind.TRAIN, Job.State.SUCCEEDED)
    running_import = make(other, Job.Kind.IMPORT, Job.State.RUNNING)
    hidden = make(theirs, Job.Kind.TRAIN, Job.State.RUNNING)
    client = api_client_for(owner)
    assert ids(client.get("/api/jobs/")) == {running_train, done_train, running_import}
    assert ids(client.get("/api/jobs/?state=running")) == {running_train, running_import}
    assert ids(client.get("/api/jobs/?kind=train&state=running")) == {running_train}
    assert ids(client.get("/api/jobs/?state=running,succeeded&kind=train")) == {running_train, done_train}
    assert ids(client.get("/api/jobs/?state=running&state=succeeded&project=" + str(mine.pk))) == {
        running_train, done_train}
    assert ids(client.get(f"/api/jobs/?project={theirs.pk}")) == set()     # a filter never shows more
    assert hidden not in ids(client.get("/api/jobs/?kind=train"))

    bad = client.get("/api/jobs/?state=runing")
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("state: no such state ['runing']; one of ['queued', 'running'")
    assert client.get("/api/jobs/?kind=training").status_code == 400
    assert client.get("/api/jobs/?project=abc").json()["detail"] == "project: a project id is a number, got 'abc'"


def test_a_misspelt_filter_is_a_400_not_the_list_unfiltered(api_client_for, owner):
    # ?status=running answered every job, so a script waiting for "no running job" waited on finished ones.
    project = do_create_project("mine", actor=owner)
    Job.objects.create(project=project, kind=Job.Kind.TRAIN, state=Job.State.SUCCEEDED)
    client = api_client_for(owner)
    bad = client.get("/api/jobs/?status=running")
    assert bad.status_code == 400
    assert bad.json()["detail"] == ("unknown query parameter(s) ['status']; allowed: ['kind', 'page', 'page_size', "
                                    "'project', 'state']")
    activity = client.get(f"/api/projects/{project.pk}/activity/?kinds=team")
    assert activity.status_code == 400 and "['kinds']" in activity.json()["detail"]
    assert client.get("/api/jobs/?state=running&page_size=5&format=json").status_code == 200
    assert client.get(f"/api/projects/{project.pk}/activity/?kind=team&page=1").status_code == 200
