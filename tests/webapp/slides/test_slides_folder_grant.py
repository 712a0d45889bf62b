"""The folder of the slide share a project may register from. SLIDES_ROOT is one share for the whole server,
often every lab's slides: before the grant, the curator of any project (anyone can make one) registered any
slide there by its path and read it in the viewer. Now a project registers by path only inside the folder a
server administrator granted it (admin site, ``manage.py slides_folder``); staff may register from anywhere;
without a grant, slides are uploaded."""

from __future__ import annotations

import io
import os

import pytest
from django.core.management import CommandError, call_command

from tests.webapp.slide_helpers import build_fixture_slide
from webapp.core.domain_errors import Invalid
from webapp.core.models import AuditLogEntry
from webapp.projects.slides_folder import clean_slides_folder, do_set_slides_folder
from webapp.jobs import operations as job_operations
from webapp.jobs.models import Job
from webapp.projects.activity import activity_rows, words
from webapp.projects.models import Project, Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def share(settings, tmp_path, monkeypatch):
    """Two labs' slides in one share, and a third folder whose name begins like the first."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    settings.SLIDES_ROOT = (tmp_path / "share").resolve()
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # nothing runs: the answers are the point
    for lab in ("lab-a", "lab-b", "lab-a-old"):
        build_fixture_slide(settings.SLIDES_ROOT / lab)
    return settings.SLIDES_ROOT


@pytest.fixture
def project(owner, share):
    return do_create_project("lab a", actor=owner)


def register(client, project, path: str, detections_path: str, name: str = "case"):
    return client.post(f"/api/projects/{project.pk}/slides/",
                       {"name": name, "path": path, "detections_path": detections_path}, format="json")


def test_without_a_grant_a_project_uploads_and_is_told_whom_to_ask(api_client_for, owner, project):
    response = register(api_client_for(owner), project, "lab-b/case-1.tif", "lab-b/case-1.geojson")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("path: this project has no folder of the server's slide share"), detail
    assert "upload the slide" in detail and "server administrator" in detail
    assert not Job.objects.exists()


def test_a_granted_folder_is_the_only_place_to_register_from(api_client_for, owner, project, share):
    do_set_slides_folder(project, "lab-a")
    client = api_client_for(owner)
    for path, detections, field in (
            ("lab-b/case-1.tif", "lab-a/case-1.geojson", "path"),             # another lab's slide
            ("lab-a/case-1.tif", "lab-b/case-1.geojson", "detections_path"),  # or its detections
            ("lab-a-old/case-1.tif", "lab-a/case-1.geojson", "path")):        # a name that only begins alike
        response = register(client, project, path, detections)
        assert response.status_code == 400, (path, detections)
        detail = response.json()["detail"]
        assert detail.startswith(f"{field}: ") and "outside this project's folder of the slide share, 'lab-a'" in detail
        assert "'lab-a/'" in detail and str(share) not in detail
    # A link inside the granted folder to another lab's slide is outside it too.
    os.symlink(share / "lab-b" / "case-1.tif", share / "lab-a" / "borrowed.tif")
    response = register(client, project, "lab-a/borrowed.tif", "lab-a/case-1.geojson")
    assert response.status_code == 400 and "outside this project's folder" in response.json()["detail"]
    assert not Job.objects.exists()

    response = register(client, project, "lab-a/case-1.tif", "lab-a/case-1.geojson")
    assert response.status_code == 202, response.content
    assert Job.objects.get().params["slide_path"] == "lab-a/case-1.tif"


def test_staff_register_from_anywhere_in_the_share_and_the_whole_share_can_be_granted(
        api_client_for, owner, make_user, project):
    operator = make_user("operator", is_staff=True)
    do_set_membership(project, operator, Role.CURATOR, actor=owner)
    assert register(api_client_for(operator), project, "lab-b/case-1.tif", "lab-b/case-1.geojson").status_code == 202

    other = do_create_project("everything", actor=owner)
    do_set_slides_folder(other, ".")
    assert register(api_client_for(owner), other, "lab-b/case-1.tif", "lab-a/case-1.geojson").status_code == 202


def test_a_member_cannot_grant_their_own_project_a_folder(api_client_for, owner, project):
    client = api_client_for(owner)  # the project's admin, not a server administrator
    assert client.get(f"/api/projects/{project.pk}/").json()["slides_folder"] == ""
    response = client.patch(f"/api/projects/{project.pk}/", {"slides_folder": "."}, format="json")
    assert response.status_code == 400 and "slides_folder" in response.json()["detail"]
    assert Project.objects.get(pk=project.pk).slides_folder == ""


def test_a_folder_is_checked_and_stored_as_a_clean_relative_path(share):
    assert clean_slides_folder("lab-a/") == "lab-a" and clean_slides_folder("lab-a\\") == "lab-a"
    assert clean_slides_folder(" . ") == "." and clean_slides_folder("") == ""
    (share / "lab-a" / "2026").mkdir()
    assert clean_slides_folder("./lab-a\\2026") == "lab-a/2026"
    os.symlink(share.parent, share / "up")
    for folder, problem in (("../share", "'..' is not allowed"), ("/etc", "not an absolute one"),
                            ("C:/slides", "not an absolute one"), ("lab-c", "there is no folder 'lab-c'"),
                            ("lab-a/case-1.tif", "there is no folder"), ("up", "links to a folder outside")):
        with pytest.raises(Invalid, match=problem) as refused:
            clean_slides_folder(folder)
        assert refused.value.field == "slides_folder" and str(share) not in refused.value.detail


def test_a_grant_is_in_the_projects_activity_once(owner, project):
    do_set_slides_folder(project, "lab-a", actor=owner)
    do_set_slides_folder(project, "lab-a/")  # the same folder: no change, no row
    do_set_slides_folder(project, "")
    rows = list(activity_rows(project, "team").filter(action="project.slides_folder_set"))
    assert [(row.details["slides_folder"], row.details["previous"]) for row in rows] == [("", "lab-a"), ("lab-a", "")]
    assert words(rows[1]) == "set the project's folder of the slide share"
    assert Project.objects.get(pk=project.pk).slides_folder == ""


def test_the_management_command_shows_grants_and_takes_back(project):
    out = io.StringIO()
    call_command("slides_folder", str(project.pk), "lab-a", stdout=out)
    assert "slides folder 'lab-a'" in out.getvalue()
    assert Project.objects.get(pk=project.pk).slides_folder == "lab-a"
    out = io.StringIO()
    call_command("slides_folder", "lab a", stdout=out)  # by name
    assert "slides folder 'lab-a'" in out.getvalue()
    call_command("slides_folder", "lab a", "--none", stdout=io.StringIO())
    assert Project.objects.get(pk=project.pk).slides_folder == ""
    with pytest.raises(CommandError, match="there is no folder 'lab-z'"):
        call_command("slides_folder", str(project.pk), "lab-z")
    with pytest.raises(CommandError, match="no project with id or name 'nope'"):
        call_command("slides_folder", "nope", ".")
    assert AuditLogEntry.objects.filter(action="project.slides_folder_set").count() == 2


def test_the_admin_site_grants_a_folder_through_the_domain_function(client, make_user, project):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    url = f"/admin/projects/project/{project.pk}/change/"
    form = {"slides_folder": "lab-b", "name": "renamed here", "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "1", "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-id": str(project.memberships.get().pk), "memberships-0-project": str(project.pk)}
    refused = client.post(url, {**form, "slides_folder": "../elsewhere"})
    assert refused.status_code == 200 and "is not allowed" in refused.content.decode()
    assert Project.objects.get(pk=project.pk).slides_folder == ""

    assert client.post(url, form).status_code == 302
    saved = Project.objects.get(pk=project.pk)
    assert (saved.slides_folder, saved.name) == ("lab-b", "lab a")  # the name is the project admins' to change
    row = AuditLogEntry.objects.get(action="project.slides_folder_set")
    assert row.actor.username == "root" and row.details == {"slides_folder": "lab-b", "previous": ""}
    assert client.get("/admin/projects/project/add/").status_code == 403


def test_projects_that_registered_slides_by_path_before_keep_the_whole_share(owner, share):
    """The migration that added the grant: a project with slides registered by path goes on as it did."""
    import importlib

    from django.apps import apps

    from webapp.datasets.slide_import import import_slide

    used, unused = do_create_project("used the share", actor=owner), do_create_project("did not", actor=owner)
    import_slide(used, name="case", slide_source=share / "lab-b" / "case-1.tif", slide_root="slides",
                 slide_name="case-1.tif", detections=share / "lab-b" / "case-1.geojson",
                 detections_name="case-1.geojson", label_set_name="qupath", actor=owner)
    migration = importlib.import_module("webapp.projects.migrations.0002_project_slides_folder")
    migration.keep_registering_where_they_did(apps, None)
    assert Project.objects.get(pk=used.pk).slides_folder == "."
    assert Project.objects.get(pk=unused.pk).slides_folder == ""


def test_paths_outside_the_folder_do_not_tell_what_exists_there(api_client_for, owner, project, share):
    """A curator could tell another lab's file names from the answers: "outside this project's folder" for
    one that exists, "no file" for one that does not."""
    do_set_slides_folder(project, "lab-a")
    client = api_client_for(owner)
    answers = {path: register(client, project, path, "lab-a/case-1.geojson").json()["detail"]
               for path in ("lab-b/case-1.tif", "lab-b/no-such-case.tif", "lab-b", "nowhere/x.tif")}
    assert all("outside this project's folder" in detail for detail in answers.values()), answers
    missing = register(client, project, "lab-a/no-such-case.tif", "lab-a/case-1.geojson").json()["detail"]
    assert missing == "path: there is no file 'lab-a/no-such-case.tif' in this project's folder 'lab-a'"
