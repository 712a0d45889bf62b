"""Staff deleting accounts on the admin site: the only admin of a project is not deleted (the project would have
nobody to manage it); another account's memberships go through do_remove_member, one activity row each with the
staff member as actor; the admin site shows memberships but changes them only through the Members page. A
deactivated admin does not count as the project's admin."""

import pytest

from webapp.core.domain_errors import Conflict
from webapp.core.models import AuditLogEntry
from webapp.projects.models import Membership, Role
from webapp.projects.operations import do_create_project, do_remove_member, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def test_the_only_admin_is_not_deleted_and_another_account_leaves_its_projects_on_record(staff_client, owner,
                                                                                        make_user, django_user_model):
    project = do_create_project("Lab", actor=owner)
    curator = make_user("curator")
    do_set_membership(project, curator, Role.CURATOR, actor=owner)

    refused = staff_client.post(f"/admin/auth/user/{owner.pk}/delete/", {"post": "yes"}, follow=True)
    assert "wner is the only admin of project &#x27;Lab&#x27;: make another member an admin" in refused.content.decode()
    assert django_user_model.objects.filter(pk=owner.pk).exists()
    assert Membership.objects.filter(project=project, user=owner, role=Role.ADMIN).exists()

    deleted = staff_client.post(f"/admin/auth/user/{curator.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not django_user_model.objects.filter(pk=curator.pk).exists()
    removal = AuditLogEntry.objects.get(action="project.member_removed")
    assert removal.actor.username == "root" and removal.details["user"] == "curator"

    # The bulk action refuses the same account and deletes the others.
    other = make_user("other")
    do_set_membership(project, other, Role.REVIEWER, actor=owner)
    staff_client.post("/admin/auth/user/", {"action": "delete_selected", "post": "yes",
                                            "_selected_action": [owner.pk, other.pk]})
    assert set(django_user_model.objects.values_list("username", flat=True)) == {"owner", "root"}


def test_memberships_are_shown_not_edited_on_the_project_admin_page(staff_client, owner):
    project = do_create_project("Lab", actor=owner)
    page = staff_client.get(f"/admin/projects/project/{project.pk}/change/").content.decode()
    assert "owner" in page and 'name="memberships-0-id"' in page   # listed
    assert 'name="memberships-0-role"' not in page and 'name="memberships-0-DELETE"' not in page


def test_a_deactivated_admin_is_no_admin_to_leave_the_project_to(owner, make_user):
    project = do_create_project("Lab", actor=owner)
    away = make_user("away")
    do_set_membership(project, away, Role.ADMIN, actor=owner)
    away.is_active = False
    away.save()
    with pytest.raises(Conflict, match="owner is the last admin"):
        do_remove_member(project, owner, actor=owner)
