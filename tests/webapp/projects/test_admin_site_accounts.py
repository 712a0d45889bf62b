"""Staff deleting or deactivating accounts on the admin site: the only admin of a project is neither deleted nor
deactivated (the project would have nobody to manage it); another account's memberships go through
do_remove_member, one activity row each with the staff member as actor; a deactivation is on the audit log. The
admin site shows memberships; the one change it makes is a member made an admin of a project (one activity row),
for a project whose only admin left the lab. A deactivated admin does not count as the project's admin."""

import pytest

from django.contrib.auth import get_user_model

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
    assert ("wner is the only admin of project &#x27;Lab&#x27; and cannot be deleted: make another member an admin "
            "first") in refused.content.decode()
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


def change_form_data(client, url: str) -> dict:
    """The admin change form's fields, and its inlines', as the browser would post them unchanged."""
    context = client.get(url).context
    forms = [context["adminform"].form]
    for inline in context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        data.update(_form_data(form))
    return data


def _form_data(form) -> dict:
    data = {}
    for name, field in form.fields.items():
        name, value = form.add_prefix(name), form[name].value()
        widget = field.widget
        if hasattr(widget, "decompress"):
            data.update({f"{name}_{i}": part or "" for i, part in enumerate(widget.decompress(value))})
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, (list, tuple)):
            data[name] = [str(v) for v in value]
        elif value is not None:
            data[name] = getattr(value, "pk", value)
    return data


def test_the_only_admin_is_not_deactivated_until_staff_make_another_member_an_admin(staff_client, owner, member):
    project = do_create_project("Lab", actor=owner)
    do_set_membership(project, member, Role.CURATOR, actor=owner)
    owner_url = f"/admin/auth/user/{owner.pk}/change/"

    data = change_form_data(staff_client, owner_url)
    data.pop("is_active")
    refused = staff_client.post(owner_url, data)
    assert refused.status_code == 200   # the form again, with the reason at the field
    assert ("owner is the only admin of project &#x27;Lab&#x27; and cannot be deactivated: make another member an "
            "admin first") in refused.content.decode()
    assert get_user_model().objects.get(pk=owner.pk).is_active
    assert not AuditLogEntry.objects.filter(action="account.deactivated").exists()

    # Staff make the curator an admin on the project's admin page (the owner has left the lab); an unknown name is
    # refused at the field.
    project_url = f"/admin/projects/project/{project.pk}/change/"
    unknown = staff_client.post(project_url, {**change_form_data(staff_client, project_url), "new_admin": "nobody"})
    assert unknown.status_code == 200 and "No account has the username &#x27;nobody&#x27;" in unknown.content.decode()
    answer = staff_client.post(project_url, {**change_form_data(staff_client, project_url), "new_admin": "member"})
    assert answer.status_code == 302
    assert Membership.objects.get(project=project, user=member).role == Role.ADMIN
    promoted = AuditLogEntry.objects.get(action="project.member_set", actor__username="root")
    assert promoted.details == {"user": "member", "role": "admin",
                                                                      "previous": "curator", "created": False}

    assert staff_client.post(owner_url, data).status_code == 302
    assert not get_user_model().objects.get(pk=owner.pk).is_active
    deactivated = AuditLogEntry.objects.get(action="account.deactivated")
    assert deactivated.actor.username == "root" and deactivated.details == {"user": "owner"}


def test_a_project_is_not_deleted_on_the_admin_site(staff_client, owner):
    """The admin site's deletion removed every row in the request, left the files and wrote no activity row: a
    project is deleted by its admins (a deletion job), after staff made a member its admin if none is left."""
    from webapp.projects.models import Project

    project = do_create_project("Lab", actor=owner)
    assert staff_client.get(f"/admin/projects/project/{project.pk}/delete/").status_code == 403
    assert staff_client.post(f"/admin/projects/project/{project.pk}/delete/", {"post": "yes"}).status_code == 403
    listing = staff_client.get("/admin/projects/project/").content.decode()
    assert 'value="delete_selected"' not in listing
    staff_client.post("/admin/projects/project/", {"action": "delete_selected", "post": "yes",
                                                   "_selected_action": [project.pk]})
    assert Project.objects.filter(pk=project.pk).exists()


def test_staff_add_an_admin_to_a_project_whose_only_member_left(staff_client, owner, make_user):
    project = do_create_project("Abandoned", actor=owner)
    owner.is_active = False
    owner.save()   # deactivated before this release refused it
    successor = make_user("successor", email="successor@lab.example")
    project_url = f"/admin/projects/project/{project.pk}/change/"
    answer = staff_client.post(project_url, {**change_form_data(staff_client, project_url),
                                             "new_admin": "successor@lab.example"})
    assert answer.status_code == 302
    assert Membership.objects.get(project=project, user=successor).role == Role.ADMIN
    added = AuditLogEntry.objects.get(action="project.member_set", details__user="successor")
    assert added.actor.username == "root" and added.details["created"] is True
