"""Brute force against passwords and API tokens is cut short (issue 13, failure 5)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def _post_login(client, path: str, username: str, password: str):
    return client.post(path, {"username": username, "password": password, "next": "/"})


def _logged_in_as(client) -> str | None:
    from django.contrib.auth import get_user

    user = get_user(client)
    return user.username if user.is_authenticated else None


@pytest.mark.slow  # a login request per failure up to the lockout limit and past it
@pytest.mark.django_db
def test_login_page_locks_after_the_failure_limit_even_for_the_right_password(client, owner, settings):
    for _ in range(200):
        response = _post_login(client, "/login/", "owner", "wrong-password")
        assert response.status_code in (200, 429)
    response = _post_login(client, "/login/", "owner", "pw-owner")
    assert _logged_in_as(client) is None
    assert response.status_code == 429
    page = response.content.decode()
    assert "Login locked" in page and "Too many wrong passwords" in page and "owner" in page
    from axes.models import AccessAttempt
    attempt = AccessAttempt.objects.get(username="owner")
    assert attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT


@pytest.mark.slow  # a login request per failure up to the lockout limit and past it
@pytest.mark.django_db
def test_lockout_starts_exactly_at_the_limit_and_spares_other_users(client, owner, member, settings):
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert _post_login(client, "/login/", "owner", "wrong-password").status_code == 200
    # One below the limit the right password still works, and a success starts the count afresh.
    assert _post_login(client, "/login/", "owner", "pw-owner").status_code == 302
    assert _logged_in_as(client) == "owner"
    client.logout()
    for _ in range(limit):
        _post_login(client, "/login/", "owner", "wrong-password")
    assert _post_login(client, "/login/", "owner", "pw-owner").status_code == 429
    # The lock is for that username from that address: another account logs in from there.
    assert _post_login(client, "/login/", "member", "pw-member").status_code == 302
    assert _logged_in_as(client) == "member"


@pytest.mark.slow  # a login request per failure up to the lockout limit and past it
@pytest.mark.django_db
def test_admin_login_is_locked_too(client, make_user):
    make_user("boss", is_staff=True, is_superuser=True)
    for _ in range(50):
        _post_login(client, "/admin/login/", "boss", "wrong-password")
    response = _post_login(client, "/admin/login/", "boss", "pw-boss")
    assert response.status_code == 429
    assert _logged_in_as(client) is None
    assert client.get("/admin/").status_code == 302  # still sent to the admin login


@pytest.mark.django_db
def test_an_admin_lifts_the_lock(client, owner, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _post_login(client, "/login/", "owner", "wrong-password")
    assert _post_login(client, "/login/", "owner", "pw-owner").status_code == 429
    call_command("axes_reset_username", "owner")
    assert _post_login(client, "/login/", "owner", "pw-owner").status_code == 302
    assert _logged_in_as(client) == "owner"


@pytest.mark.django_db
def test_lock_ends_after_the_cooloff(client, owner, settings):
    from axes.models import AccessAttempt

    for _ in range(settings.AXES_FAILURE_LIMIT):
        _post_login(client, "/login/", "owner", "wrong-password")
    assert _post_login(client, "/login/", "owner", "pw-owner").status_code == 429
    # Age the attempt past the cool-off instead of sleeping through it.
    attempt = AccessAttempt.objects.get(username="owner")
    attempt.attempt_time -= settings.AXES_COOLOFF_TIME * 2
    attempt.save()
    assert _post_login(client, "/login/", "owner", "pw-owner").status_code == 302


@pytest.mark.parametrize("weak", ["87654329", "password1234", "123456789012", "short-pw1", "owner-owner-1"])
@pytest.mark.django_db
def test_weak_passwords_are_refused(django_user_model, weak):
    user = django_user_model(username="owner-owner", email="owner@example.org")
    with pytest.raises(ValidationError):
        validate_password(weak, user)


@pytest.mark.django_db
def test_a_strong_password_passes(django_user_model):
    validate_password("tinted-Nucleus-47-merge", django_user_model(username="owner"))


@pytest.mark.django_db
def test_admin_password_change_form_refuses_a_numeric_password(client, make_user):
    admin = make_user("boss", is_staff=True, is_superuser=True)
    client.force_login(admin)
    response = client.post(f"/admin/auth/user/{admin.pk}/password/",
                           {"password1": "87654329", "password2": "87654329"})
    assert response.status_code == 200  # form shown again with its errors
    admin.refresh_from_db()
    assert not admin.check_password("87654329")


@pytest.mark.django_db
def test_ensure_admin_generates_a_password_the_validators_accept(tmp_path, settings, django_user_model):
    settings.DATA_DIR = tmp_path
    call_command("ensure_admin", "--username", "admin")
    password = re.search(r"password: (\S+)", (tmp_path / "admin-credentials.txt").read_text()).group(1)
    admin = django_user_model.objects.get(username="admin")
    validate_password(password, admin)
    assert admin.check_password(password)


@pytest.mark.django_db
def test_token_brute_force_gets_429_with_a_detail(owner, settings):
    good = Token.objects.create(user=owner).key
    scanner = APIClient()
    statuses = []
    for attempt in range(settings.TOKEN_FAILURE_LIMIT + 5):
        scanner.credentials(HTTP_AUTHORIZATION=f"Token {attempt:040x}")
        statuses.append(scanner.get("/api/jobs/").status_code)
    assert statuses[:settings.TOKEN_FAILURE_LIMIT] == [401] * settings.TOKEN_FAILURE_LIMIT
    assert set(statuses[settings.TOKEN_FAILURE_LIMIT:]) == {429}
    # Even the right token is refused from that address until the cool-off ends...
    scanner.credentials(HTTP_AUTHORIZATION=f"Token {good}")
    response = scanner.get("/api/jobs/")
    assert response.status_code == 429
    assert "unknown API token" in response.json()["detail"]
    assert int(response["Retry-After"]) > 0
    # One sentence that says when, in minutes: not followed by DRF's "Expected available in N seconds."
    assert response.json()["detail"].endswith("minutes, with the token shown on your account page.")
    assert "Expected available" not in response.json()["detail"]
    # ...while another address is served.
    other = APIClient(REMOTE_ADDR="10.1.2.3")
    other.credentials(HTTP_AUTHORIZATION=f"Token {good}")
    assert other.get("/api/jobs/").status_code == 200
    # An admin lifts the lockout at once (a script's wrong token locked out every script behind the address).
    from io import StringIO

    from django.core.management import call_command

    said = StringIO()
    call_command("token_lockout_reset", "127.0.0.1", stdout=said)
    assert said.getvalue().startswith(f"127.0.0.1: {settings.TOKEN_FAILURE_LIMIT} unknown token(s) forgotten")
    assert scanner.get("/api/jobs/").status_code == 200
    call_command("token_lockout_reset", "127.0.0.1", stdout=said)
    assert "nothing to lift" in said.getvalue()


@pytest.mark.django_db
def test_good_tokens_never_count_as_failures(owner, settings):
    good = Token.objects.create(user=owner).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {good}")
    for _ in range(settings.TOKEN_FAILURE_LIMIT * 2):
        assert client.get("/api/jobs/").status_code == 200


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_forwarded_address_counts(owner, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    good = Token.objects.create(user=owner).key
    for attempt in range(settings.TOKEN_FAILURE_LIMIT):
        # A forged left-most entry must not let the scanner change its address.
        scanner = APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"1.1.1.{attempt}, 192.0.2.7")
        scanner.credentials(HTTP_AUTHORIZATION=f"Token {attempt:040x}")
        assert scanner.get("/api/jobs/").status_code == 401
    blocked = APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.7")
    blocked.credentials(HTTP_AUTHORIZATION=f"Token {good}")
    assert blocked.get("/api/jobs/").status_code == 429
    colleague = APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.8")
    colleague.credentials(HTTP_AUTHORIZATION=f"Token {good}")
    assert colleague.get("/api/jobs/").status_code == 200


@pytest.mark.django_db
def test_tokens_still_work_when_the_cache_is_unreachable(owner, monkeypatch):
    from django.core.cache import cache

    def unreachable(*args, **kwargs):
        raise ConnectionError("Redis is down")
    for method in ("get", "add", "incr"):
        monkeypatch.setattr(cache, method, unreachable)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    assert client.get("/api/jobs/").status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.get("/api/jobs/").status_code == 401


def test_the_lockout_reset_reaches_the_servers_cache_from_a_hand_run_manage_py(settings):
    """run.py serves with DEBUG off (the count in Redis); manage.py run by hand has DEBUG on, whose cache is its
    own memory: the command said "nothing to lift" and the lockout stayed."""
    from io import StringIO

    from django.core.cache import caches
    from django.core.management import call_command

    from webapp.core.authentication import token_failures_key

    server = caches["server"]
    assert server.__class__.__name__ == "ReusedClientRedisCache"
    server.set(token_failures_key("10.9.8.7"), settings.TOKEN_FAILURE_LIMIT, 60)
    said = StringIO()
    call_command("token_lockout_reset", "10.9.8.7", stdout=said)
    assert said.getvalue().startswith(f"10.9.8.7: {settings.TOKEN_FAILURE_LIMIT} unknown token(s) forgotten")
    assert server.get(token_failures_key("10.9.8.7")) is None
