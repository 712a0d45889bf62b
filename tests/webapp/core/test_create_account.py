"""manage.py create_account: a colleague's account without a password, and a one-time link with which they choose
one (no password passes through whoever made the account, no mail server needed); audited. Before, accounts were
made on the admin site only, with a password the staff member chose and had to pass on."""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from webapp.core.models import AuditLogEntry

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "violet-microscope-42"


def create(*args) -> str:
    out = StringIO()
    call_command("create_account", *args, stdout=out)
    return out.getvalue()


def link_path(output: str) -> str:
    found = re.findall(r"https://nuclei\.lab\.example(/password-reset/\S+/)", output)
    assert len(found) == 1, output
    return found[0]


def test_the_link_sets_the_password_once_and_the_account_then_logs_in():
    output = create("alice", "--email", "alice@LAB.example", "--url", "https://nuclei.lab.example/")
    alice = get_user_model().objects.get(username="alice")
    assert alice.email == "alice@lab.example" and not alice.has_usable_password()
    created = AuditLogEntry.objects.get(action="account.created")
    assert created.details == {"user": "alice"} and created.target.endswith(f":{alice.pk}")

    client = Client()
    form = client.get(link_path(output), follow=True)
    assert form.status_code == 200
    done = client.post(form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    # The link worked once.
    again = Client().get(link_path(output), follow=True).content.decode()
    assert 'name="new_password1"' not in again

    # --link: a new one for an existing account.
    assert Client().get(link_path(create("alice", "--link", "--url", "https://nuclei.lab.example")),
                        follow=True).status_code == 200


def test_a_taken_or_bad_username_or_email_is_named_and_nothing_is_written(make_user):
    make_user("bob")
    with pytest.raises(CommandError, match="No account was created: username: A user with that username already"):
        create("bob")
    with pytest.raises(CommandError, match="email: Enter a valid email address"):
        create("carol", "--email", "not-an-address")
    with pytest.raises(CommandError, match="username: Enter a valid username"):
        create("carol smith")
    with pytest.raises(CommandError, match="No active account has the username 'dave'"):
        create("dave", "--link")
    assert set(get_user_model().objects.values_list("username", flat=True)) == {"bob"}
    assert not AuditLogEntry.objects.filter(action="account.created").exists()
