import subprocess
import sys

import pytest
from rest_framework.authtoken.models import Token

from tests.conftest import ROOT, subprocess_env


@pytest.mark.django_db
def test_token_made_on_the_account_page_authenticates_scripts(client, owner, api_client_for):
    client.force_login(owner)
    response = client.post("/account/token/")
    assert response.status_code == 302
    token = Token.objects.get(user=owner)
    assert token.key in client.get("/account/").content.decode()

    from rest_framework.test import APIClient
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert script.get("/api/jobs/").status_code == 200

    # Replacing the token revokes the old one.
    client.post("/account/token/")
    assert script.get("/api/jobs/").status_code == 401
    from webapp.core.models import AuditLogEntry
    assert AuditLogEntry.objects.filter(action="account.token_regenerated", actor=owner).count() == 2


@pytest.mark.slow  # runs manage.py in a new process
@pytest.mark.django_db(transaction=True)
def test_drf_create_token_command(owner):
    result = subprocess.run([sys.executable, "manage.py", "drf_create_token", "owner"], cwd=ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Token.objects.get(user=owner).key in result.stdout


@pytest.mark.django_db
def test_bad_token_gets_json_detail(api_client_for):
    from rest_framework.test import APIClient
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/jobs/")
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Invalid token: it was replaced or revoked")
    assert "/account/" in response.json()["detail"]


@pytest.mark.django_db
def test_the_account_page_revokes_the_token_without_making_another(client, owner):
    """The page only replaced a token: someone whose token leaked, or whose script was retired, had to keep a
    working token, or change their password, to end it."""
    from rest_framework.test import APIClient

    from webapp.core.models import AuditLogEntry

    client.force_login(owner)
    assert "Revoke token" not in client.get("/account/").content.decode()   # nothing to revoke yet
    client.post("/account/token/")
    token = Token.objects.get(user=owner)
    page = client.get("/account/").content.decode()
    assert 'action="/account/token/revoke/"' in page and "Revoke token" in page
    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert script.get("/api/jobs/").status_code == 200

    response = client.post("/account/token/revoke/", follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Your API token was revoked" in page and "You have no token yet." in page and "Revoke token" not in page
    assert not Token.objects.filter(user=owner).exists()
    refused = script.get("/api/jobs/")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    row = AuditLogEntry.objects.get(action="account.token_revoked", actor=owner)
    assert row.details == {"reason": "revoked on the account page"}

    again = client.post("/account/token/revoke/", follow=True).content.decode()
    assert "nothing to revoke" in again
    assert AuditLogEntry.objects.filter(action="account.token_revoked").count() == 1


@pytest.mark.django_db
def test_staff_revoke_a_colleagues_token_on_the_admin_site_without_reading_or_making_one(client, owner, member,
                                                                                           make_user):
    """DRF's token page listed every key (a key to each colleague's account) and made tokens for anyone; a
    revocation there wrote no audit row."""
    from webapp.core.models import AuditLogEntry

    key = Token.objects.create(user=member).key
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    listing = client.get("/admin/authtoken/tokenproxy/")
    assert listing.status_code == 200 and "member" in listing.content.decode()
    assert key not in listing.content.decode()
    assert client.get("/admin/authtoken/tokenproxy/add/").status_code == 403

    assert client.post(f"/admin/authtoken/tokenproxy/{member.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Token.objects.filter(user=member).exists()
    revoked = AuditLogEntry.objects.get(action="account.token_revoked")
    assert revoked.actor.username == "root" and revoked.details == {"reason": "revoked by staff"}
    assert revoked.target.endswith(f":{member.pk}")
    from rest_framework.test import APIClient

    script = APIClient()
    script.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert script.get("/api/jobs/").status_code == 401
