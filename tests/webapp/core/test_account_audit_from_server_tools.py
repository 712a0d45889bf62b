"""What a server administrator does to accounts outside the site's own pages is on the audit log too: a token made
or reset with ``manage.py drf_create_token`` (webapp.core's command, which replaces DRF's), a password set with
``manage.py changepassword``, an account made on the admin site."""

import pytest
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token

from webapp.core.models import AuditLogEntry

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    from io import StringIO
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_drf_create_token_makes_or_resets_a_token_on_the_audit_log(owner):
    assert get_commands()["drf_create_token"] == "webapp.core"

    made = run("drf_create_token", "owner")
    key = Token.objects.get(user=owner).key
    assert made == f"Generated token {key} for user owner\n"     # DRF's output, which scripts may read
    row = AuditLogEntry.objects.get(action="account.token_regenerated")
    assert row.actor is None and row.target == f"auth.user:{owner.pk}"
    assert row.details == {"user": "owner", "command": "drf_create_token"}

    # Without -r the token there is is printed again, unchanged and not audited (nothing changed).
    assert run("drf_create_token", "owner") == made
    assert AuditLogEntry.objects.filter(action="account.token_regenerated").count() == 1

    reset = run("drf_create_token", "-r", "owner")
    new_key = Token.objects.get(user=owner).key
    assert new_key != key and reset == f"Generated token {new_key} for user owner\n"
    assert AuditLogEntry.objects.filter(action="account.token_regenerated", details__command="drf_create_token",
                                        actor=None).count() == 2


def test_drf_create_token_for_nobody_changes_nothing():
    with pytest.raises(CommandError, match="Cannot create the Token: user nobody does not exist"):
        run("drf_create_token", "nobody")
    assert not Token.objects.exists() and not AuditLogEntry.objects.exists()


def test_changepassword_is_on_the_audit_log_and_ends_the_token(owner, monkeypatch):
    Token.objects.create(user=owner)
    monkeypatch.setattr("django.contrib.auth.management.commands.changepassword.getpass.getpass",
                        lambda prompt="": "a new long passphrase 7")
    run("changepassword", "owner")
    owner.refresh_from_db()
    assert owner.check_password("a new long passphrase 7")
    assert AuditLogEntry.objects.get(action="account.password_changed").details == {"user": "owner"}
    assert AuditLogEntry.objects.get(action="account.token_revoked").details == {"reason": "password changed"}
    assert not Token.objects.filter(user=owner).exists()


def test_an_account_made_on_the_admin_site_is_on_the_audit_log(client, make_user, django_user_model):
    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    response = client.post("/admin/auth/user/add/", {"username": "newcomer", "usable_password": "true",
                                                     "password1": "a long passphrase 9", "password2": "a long passphrase 9"})
    assert response.status_code == 302, response.content.decode()[:2000]
    newcomer = django_user_model.objects.get(username="newcomer")
    created = AuditLogEntry.objects.get(action="account.created")
    assert created.actor == root and created.target == f"auth.user:{newcomer.pk}"
    assert created.details == {"user": "newcomer"}
