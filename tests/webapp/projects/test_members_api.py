"""Managing a project's members through the API: admins add (by username or e-mail), change roles and
remove; other members only read the list; outsiders see nothing; a project never loses its last admin."""

import pytest

from webapp.core.models import AuditLogEntry
from webapp.projects.models import Membership, Role
from webapp.projects.operations import do_create_project, do_set_membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(owner, member):
    project = do_create_project("team", actor=owner)
    do_set_membership(project, member, Role.CURATOR, actor=owner)
    return project


def members_url(project, user=None) -> str:
    return f"/api/projects/{project.pk}/members/" + (f"{user.pk}/" if user is not None else "")


def roles_in(project) -> dict[str, str]:
    return dict(Membership.objects.filter(project=project).values_list("user__username", "role"))


def test_admin_adds_by_username_and_by_email_changes_a_role_and_removes(project, owner, make_user, api_client_for):
    make_user("alice")
    bob = make_user("bob", email="Bob.Smith@lab.example")
    client = api_client_for(owner)
    # An e-mail address finds someone the admin already works with (here in another project).
    do_set_membership(do_create_project("earlier work", actor=owner), bob, "viewer", actor=owner)

    # A member added is 201 (it was 200, as a role changed), with where to change or end the membership.
    response = client.post(members_url(project), {"username": "alice", "role": "reviewer"}, format="json")
    assert response.status_code == 201, response.content
    response = client.post(members_url(project), {"username": "bob.smith@LAB.example", "role": "viewer"}, format="json")
    assert response.status_code == 201, response.content
    assert response["Location"] == f"http://testserver{members_url(project, bob)}"
    assert {"user_id": bob.pk, "username": "bob", "role": "viewer", "active": True} in response.json()
    assert roles_in(project) == {"owner": "admin", "member": "curator", "alice": "reviewer", "bob": "viewer"}
    # The same request again changes nothing, and another role changes the member's: 200, the members listed.
    for role in ("viewer", "reviewer"):
        response = client.post(members_url(project), {"username": "bob", "role": role}, format="json")
        assert response.status_code == 200 and not response.has_header("Location"), response.content
        assert {"user_id": bob.pk, "username": "bob", "role": role, "active": True} in response.json()
    assert roles_in(project)["bob"] == "reviewer"

    response = client.patch(members_url(project, bob), {"role": "curator"}, format="json")
    assert response.status_code == 200, response.content
    assert roles_in(project)["bob"] == "curator"

    response = client.delete(members_url(project, bob))
    assert response.status_code == 200, response.content
    assert "bob" not in roles_in(project)
    assert [m["username"] for m in response.json()] == ["alice", "member", "owner"]

    actions = list(AuditLogEntry.objects.filter(target=f"projects.project:{project.pk}", actor=owner)
                   .order_by("id").values_list("action", "details__user"))
    assert actions[-3:] == [("project.member_set", "bob"), ("project.member_role_changed", "bob"),
                            ("project.member_removed", "bob")]


def test_members_read_the_list_but_only_admins_change_it(project, owner, member, make_user, api_client_for):
    alice = make_user("alice")
    curator = api_client_for(member)  # a curator: below admin
    listed = curator.get(members_url(project))
    assert listed.status_code == 200
    assert {m["username"]: m["role"] for m in listed.json()} == {"owner": "admin", "member": "curator"}
    for response in (curator.post(members_url(project), {"username": "alice", "role": "viewer"}, format="json"),
                     curator.patch(members_url(project, owner), {"role": "viewer"}, format="json"),
                     curator.delete(members_url(project, owner))):
        assert response.status_code == 403
        assert "admin role" in response.json()["detail"]
    assert roles_in(project) == {"owner": "admin", "member": "curator"}
    assert not Membership.objects.filter(user=alice).exists()


def test_outsiders_get_404_and_change_nothing(project, owner, outsider, api_client_for):
    client = api_client_for(outsider)
    for response in (client.get(members_url(project)),
                     client.post(members_url(project), {"username": "outsider", "role": "admin"}, format="json"),
                     client.patch(members_url(project, owner), {"role": "viewer"}, format="json"),
                     client.delete(members_url(project, owner))):
        assert response.status_code == 404
        assert "not a member" in response.json()["detail"]
    assert roles_in(project) == {"owner": "admin", "member": "curator"}


def test_the_last_admin_can_be_neither_removed_nor_demoted(project, owner, member, api_client_for):
    client = api_client_for(owner)
    for response in (client.delete(members_url(project, owner)),
                     client.patch(members_url(project, owner), {"role": "curator"}, format="json"),
                     client.post(members_url(project), {"username": "owner", "role": "viewer"}, format="json")):
        assert response.status_code == 409
        assert "last admin" in response.json()["detail"]
    assert roles_in(project)["owner"] == "admin"

    # With a second admin, the first may step down, and then the second is the last one.
    assert client.patch(members_url(project, member), {"role": "admin"}, format="json").status_code == 200
    assert client.patch(members_url(project, owner), {"role": "viewer"}, format="json").status_code == 200
    assert roles_in(project) == {"owner": "viewer", "member": "admin"}
    response = api_client_for(member).delete(members_url(project, member))
    assert response.status_code == 409
    assert roles_in(project)["member"] == "admin"


def test_unknown_accounts_and_non_members_get_a_clear_answer(project, owner, outsider, make_user, api_client_for):
    twins = [make_user("twin1", email="shared@lab.example"), make_user("twin2", email="shared@lab.example")]
    client = api_client_for(owner)
    response = client.post(members_url(project), {"username": "nobody@lab.example", "role": "viewer"}, format="json")
    assert response.status_code == 400
    assert "No account has the username 'nobody@lab.example'" in response.json()["detail"]
    for twin in twins:   # colleagues: an e-mail address finds only those
        do_set_membership(do_create_project(f"with {twin.username}", actor=owner), twin, "viewer", actor=owner)
    response = client.post(members_url(project), {"username": "shared@lab.example", "role": "viewer"}, format="json")
    assert response.status_code == 400
    assert "Several accounts" in response.json()["detail"]
    response = client.post(members_url(project), {"username": "outsider", "role": "owner"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("role:")

    # An account that is not a member answers as one that does not exist: never its username (whoever creates
    # a project of their own could otherwise list every account of the site by id).
    for method in (client.delete, lambda url: client.patch(url, {"role": "viewer"}, format="json")):
        response = method(members_url(project, outsider))
        assert response.status_code == 404
        assert response.json()["detail"] == f"This project has no member with the id {outsider.pk}."
        assert "outsider" not in response.content.decode()
    response = client.patch(f"/api/projects/{project.pk}/members/999999/", {"role": "viewer"}, format="json")
    assert response.status_code == 404
    assert response.json()["detail"] == "This project has no member with the id 999999."
    assert roles_in(project) == {"owner": "admin", "member": "curator"}


def test_a_removed_member_loses_access_at_once(project, owner, member, api_client_for):
    assert api_client_for(member).get(f"/api/projects/{project.pk}/").status_code == 200
    assert api_client_for(owner).delete(members_url(project, member)).status_code == 200
    assert api_client_for(member).get(f"/api/projects/{project.pk}/").status_code == 404



def test_an_email_address_finds_only_someone_the_admin_works_with(project, owner, make_user, api_client_for):
    """Anyone may create a project and add members: the answer named the account of any e-mail address (the
    staff account's too), which the password reset form is built not to tell."""
    make_user("stranger", email="stranger@lab.example")
    client = api_client_for(owner)
    known = client.post(members_url(project), {"username": "stranger@lab.example", "role": "viewer"}, format="json")
    unknown = client.post(members_url(project), {"username": "nobody@lab.example", "role": "viewer"}, format="json")
    assert known.status_code == unknown.status_code == 400
    assert known.json()["detail"].replace("stranger", "nobody") == unknown.json()["detail"]
    assert client.post(members_url(project), {"username": "stranger", "role": "viewer"},
                       format="json").status_code == 201   # by username, as before
    staff = make_user("operator", is_staff=True)   # staff find anyone by e-mail
    do_set_membership(project, staff, "admin", actor=owner)
    make_user("other", email="other@lab.example")
    added = api_client_for(staff).post(members_url(project), {"username": "OTHER@lab.example", "role": "viewer"},
                                       format="json")
    assert added.status_code == 201 and roles_in(project)["other"] == "viewer"
