"""Setting one's own e-mail address on the account page, with one's current password (reset links go there, and
admins add colleagues by it); a mistake comes back beside its field and changes nothing; a change is audited.
Before, only staff could set it, and the account page said a forgotten password needed them."""

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from webapp.core.models import AuditLogEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(owner):
    client = Client()
    client.force_login(owner)
    return client


def email_of(user) -> str:
    return get_user_model().objects.get(pk=user.pk).email


def test_the_owner_sets_their_address_and_a_reset_link_then_reaches_it(client, owner):
    page = client.get("/account/").content.decode()
    assert 'action="/account/email/"' in page and "no e-mail address" in page
    response = client.post("/account/email/", {"email": "Owner@LAB.example", "password": "pw-owner"}, follow=True)
    assert "Your e-mail address is now Owner@lab.example." in response.content.decode()
    assert email_of(owner) == "Owner@lab.example"
    changed = AuditLogEntry.objects.get(action="account.email_changed")
    assert changed.actor == owner and changed.details == {"email": "Owner@lab.example", "previous": ""}

    Client().post("/password-reset/", {"email": "owner@lab.example"})
    assert [message.to for message in mail.outbox] == [["Owner@lab.example"]]


@pytest.mark.parametrize("data, field, words", [
    ({"email": "owner@lab.example", "password": "wrong"}, "password", "That is not your current password"),
    ({"email": "not an address", "password": "pw-owner"}, "email", "&#x27;not an address&#x27; is not an e-mail address."),
])
def test_a_mistake_is_shown_beside_its_field_and_changes_nothing(client, owner, data, field, words):
    response = client.post("/account/email/", data)
    assert response.status_code == 200
    html = response.content.decode()
    assert words in html and 'id="email-error" role="alert"' in html
    tag = html.split(f'name="{field}"', 1)[1].split(">", 1)[0]
    assert 'aria-invalid="true" aria-describedby="email-error"' in tag
    assert f'value="{data["email"]}"' in html   # what was typed is kept
    assert email_of(owner) == ""
    assert not AuditLogEntry.objects.filter(action="account.email_changed").exists()


def test_anonymous_callers_are_sent_to_log_in():
    response = Client().post("/account/email/", {"email": "x@lab.example", "password": "x"})
    assert response.status_code == 302 and "/login/" in response["Location"]
