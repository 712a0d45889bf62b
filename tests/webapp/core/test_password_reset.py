"""Password reset by e-mail (Django's views, the app's templates) and changing one's own password."""

import re

import pytest
from django.core import mail
from django.test import Client

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "violet-microscope-42"


@pytest.fixture
def alice(make_user):
    return make_user("alice", email="alice@lab.example")


def reset_link(message) -> str:
    found = re.findall(r"https?://[^/\s]+(/password-reset/[^\s]+/)", message.body)
    assert len(found) == 1, message.body
    return found[0]


def test_the_login_page_links_to_the_reset_form():
    page = Client().get("/login/").content.decode()
    assert 'href="/password-reset/"' in page
    form = Client().get("/password-reset/")
    assert form.status_code == 200
    assert 'name="email"' in form.content.decode()
    assert "Content-Security-Policy" in form.headers


def test_reset_by_email_sets_a_new_password_once(alice):
    client = Client()
    response = client.post("/password-reset/", {"email": "ALICE@lab.example"})
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@lab.example"]
    assert message.subject == "Nucleus merge: reset your password"
    assert "Hello alice," in message.body and "&#" not in message.body

    link = reset_link(message)
    page = client.get(link, follow=True)
    assert "Choose a new password" in page.content.decode()
    set_password_url = page.redirect_chain[-1][0]  # Django moves the token out of the URL into the session
    weak = client.post(set_password_url, {"new_password1": "12345678", "new_password2": "12345678"})
    assert weak.status_code == 200
    assert "too short" in weak.content.decode()
    done = client.post(set_password_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/password-reset/done/"
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)

    assert Client().post("/login/", {"username": "alice", "password": NEW_PASSWORD}).status_code == 302
    # The link worked once.
    again = Client().get(link, follow=True)
    assert "This link does not work" in again.content.decode()


def test_an_unknown_address_sends_nothing_and_says_the_same(alice):
    response = Client().post("/password-reset/", {"email": "mallory@elsewhere.example"})
    assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert mail.outbox == []


def test_a_forged_link_changes_nothing(alice):
    page = Client().get("/password-reset/MQ/abc-123/", follow=True).content.decode()
    assert "This link does not work" in page
    alice.refresh_from_db()
    assert alice.check_password("pw-alice")


def test_change_password_from_the_account_page(alice):
    client = Client()
    client.force_login(alice)
    assert 'href="/account/password/"' in client.get("/account/").content.decode()
    wrong = client.post("/account/password/", {"old_password": "nope", "new_password1": NEW_PASSWORD,
                                               "new_password2": NEW_PASSWORD})
    assert wrong.status_code == 200
    assert "old password was entered incorrectly" in wrong.content.decode()
    # The error is tied to its field for screen readers, and the rules to the new password.
    html = wrong.content.decode()
    assert 'name="old_password"' in html and 'aria-invalid="true" aria-describedby="old-password-errors"' in html
    assert '<div id="old-password-errors"><p class="flash error">' in html
    assert 'aria-describedby="password-rules"' in html and 'id="password-rules"' in html
    alice.refresh_from_db()
    assert alice.check_password("pw-alice")

    done = client.post("/account/password/", {"old_password": "pw-alice", "new_password1": NEW_PASSWORD,
                                              "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/account/password/done/"
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert client.get("/account/").status_code == 200  # still logged in here
    # On the audit log, though she had no API token to revoke (before, nothing was written then).
    from webapp.core.models import AuditLogEntry

    changed = AuditLogEntry.objects.get(action="account.password_changed")
    assert changed.details == {"user": "alice"} and changed.target.endswith(f":{alice.pk}")
    assert not AuditLogEntry.objects.filter(action="account.token_revoked").exists()


def test_changing_a_password_needs_a_login():
    response = Client().get("/account/password/")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_reset_requests_are_limited_per_address_and_per_email(alice):
    """The form cannot flood an inbox: past the limit an e-mail address gets nothing more (the answer
    looks as usual), and past the limit a requesting address is told to wait (429)."""
    from django.conf import settings as django_settings
    from django.core.cache import cache

    from webapp.core.passwords import ADDRESS_FACTOR, address_key, email_key

    limit = django_settings.PASSWORD_RESET_LIMIT
    # Counters of an earlier run, where the cache outlives the test (Redis with DEBUG off).
    cache.delete_many([address_key("198.51.100.7"), address_key("198.51.100.8"), email_key("alice@lab.example"),
                       email_key("carol@lab.example"), email_key("someone@lab.example"),
                       *(email_key(f"user{k}@lab.example") for k in range(ADDRESS_FACTOR * limit))])
    client = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(limit + 2):
        response = client.post("/password-reset/", {"email": "alice@lab.example"})
        assert response.status_code == 302 and response["Location"] == "/password-reset/sent/"
    assert len(mail.outbox) == limit

    # One address may ask for several accounts (a lab behind one router), up to its own limit.
    for k in range(ADDRESS_FACTOR * limit - (limit + 2)):
        assert client.post("/password-reset/", {"email": f"user{k}@lab.example"}).status_code == 302
    refused = client.post("/password-reset/", {"email": "someone@lab.example"})
    assert refused.status_code == 429
    assert "Too many password reset requests from your address" in refused.content.decode()
    # Another address may still ask for another account's reset.
    assert Client(REMOTE_ADDR="198.51.100.8").post("/password-reset/",
                                                    {"email": "carol@lab.example"}).status_code == 302


def test_a_new_password_ends_the_old_api_token(alice, api_client_for):
    """The account page's password change and a reset link left the API token working: recovering a taken-over
    account by a new password left it open to whoever had copied the token."""
    from rest_framework.authtoken.models import Token

    from webapp.core.models import AuditLogEntry

    def token_works(token) -> bool:
        return Client().get("/api/projects/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200

    old = Token.objects.create(user=alice).key
    client = Client()
    client.force_login(alice)
    client.get("/")   # a login's and a page's saves do not touch the token
    assert token_works(old)
    changed = client.post("/account/password/", {"old_password": "pw-alice", "new_password1": NEW_PASSWORD,
                                                 "new_password2": NEW_PASSWORD})
    assert changed.status_code == 302
    assert not token_works(old) and not Token.objects.filter(user=alice).exists()
    assert AuditLogEntry.objects.get(action="account.token_revoked").details == {"reason": "password changed"}

    second = Token.objects.create(user=alice).key
    Client().post("/password-reset/", {"email": "alice@lab.example"})
    reset = Client()
    page = reset.get(reset_link(mail.outbox[-1]), follow=True)
    done = reset.post(page.redirect_chain[-1][0], {"new_password1": "another-violet-7", "new_password2":
                                                   "another-violet-7"})
    assert done.status_code == 302 and not token_works(second)
    assert AuditLogEntry.objects.filter(action="account.password_changed").count() == 2

    third = Token.objects.create(user=alice).key
    alice.refresh_from_db()
    alice.first_name = "Alice"
    alice.save()   # any other change: the token stays
    assert token_works(third)



def test_a_failed_login_is_announced_and_tied_to_the_password_field(alice):
    page = Client().post("/login/", {"username": "alice", "password": "wrong"}).content.decode()
    assert '<p class="flash error" id="login-error" role="alert">' in page
    assert 'aria-invalid="true" aria-describedby="login-error"' in page and page.count("autofocus") == 1
