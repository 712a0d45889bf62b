"""Who is asking: the client's address, and API tokens that cannot be guessed by brute force.

Passwords are guarded by django-axes (settings: AXES_*). A token is 40 hex digits, so guessing one is
hopeless in principle; counting the failures still turns a scan into a handful of 429s and makes it
visible in the log, the same treatment the login page gets.
"""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from . import sql

log = logging.getLogger(__name__)


def client_ip(request) -> str | None:
    """The client's address: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies the address that the
    outermost trusted proxy put in X-Forwarded-For (entries left of it are the client's to forge)."""
    remote = request.META.get("REMOTE_ADDR") or None  # None, not a made-up address: axes stores it as an IP
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < proxies:
        return remote
    return forwarded[-proxies]


# DRF's "Invalid token." left a script's owner guessing: a token replaced or revoked on the account page, or by a
# new password, reads as one never made.
INVALID_TOKEN = ("Invalid token: it was replaced or revoked (on the account page, or by a new password), or never "
                 "existed. Your account page, /account/, shows your current token or creates one.")


class TokenFailuresThrottled(exceptions.Throttled):
    default_detail = "Too many requests with an unknown API token from this address."

    def __init__(self, wait: int):
        minutes = max(1, round(wait / 60))
        # APIException's own constructor: Throttled's would append "Expected available in 900 seconds." to a
        # sentence that says it already. The handler still sends Retry-After from ``wait``.
        exceptions.APIException.__init__(self, detail=(
            f"Too many requests with an unknown API token from this address; try again in about {minutes} "
            f"minute{'s' if minutes != 1 else ''}, with the token shown on your account page."))
        self.wait = math.ceil(wait)


class ThrottledTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, refusing an address that sent TOKEN_FAILURE_LIMIT unknown tokens
    within LOGIN_COOLOFF_MINUTES: 429 with a ``detail`` until the cool-off ends, even for a good token
    (otherwise the scan would still learn which guess was right)."""

    def authenticate(self, request):
        if not self._sends_token(request):
            return None
        key = token_failures_key(client_ip(request) or "unknown")
        cooloff = settings.LOGIN_COOLOFF_MINUTES * 60
        if _cached_failures(key) >= settings.TOKEN_FAILURE_LIMIT:
            raise TokenFailuresThrottled(wait=cooloff)
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            failures = count_in_window(key, cooloff)
            if failures == settings.TOKEN_FAILURE_LIMIT:
                log.warning("API token authentication from %s refused for %d min after %d failures",
                            client_ip(request), settings.LOGIN_COOLOFF_MINUTES, failures)
            raise

    def authenticate_credentials(self, key):
        """DRF's lookup (token, then its user) as one plain statement: every API request of a script or
        of the review page's keyboard loop pays for it."""
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        user_model = get_user_model()
        user = sql.first(user_model.objects.raw(
            f"SELECT u.*, t.created AS token_created FROM {sql.table(Token)} t "
            f"JOIN {sql.table(user_model)} u ON u.id = t.user_id WHERE t.key = %s", [key]))
        if user is None:
            raise exceptions.AuthenticationFailed(INVALID_TOKEN)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token = Token(key=key, user=user, created=sql.datetime_value(user.token_created))
        return user, token

    def _sends_token(self, request) -> bool:
        header = request.META.get("HTTP_AUTHORIZATION", "").split()
        return bool(header) and header[0].lower() == self.keyword.lower()


def token_failures_key(address: str) -> str:
    return f"token-failures:{address}"


def clear_token_failures(address: str) -> int:
    """Forget the unknown tokens counted from ``address`` (``manage.py token_lockout_reset``), in this process's
    cache and in the served installation's (Redis: a manage.py run by hand has DEBUG on, and so a cache in its own
    memory): how many there were. Raises the cache's error when Redis cannot be reached."""
    from django.core.cache import caches

    key = token_failures_key(address)
    failures = 0
    for alias in dict.fromkeys(["default", "server"]):
        failures = max(failures, caches[alias].get(key, 0))
        caches[alias].delete(key)
    return failures


# The cache is Redis in production. Should it be unreachable, tokens are checked without counting:
# the API keeps answering (health reports the outage) instead of failing every request with a 500.

def _cached_failures(key: str) -> int:
    try:
        return cache.get(key, 0)
    except Exception:  # noqa: BLE001 - any cache backend error
        log.warning("token failure count unavailable (cache unreachable)", exc_info=True)
        return 0


def count_in_window(key: str, seconds: int, what: str = "token failure") -> int:
    """One more event in the window of ``seconds`` that the first event started (incr() keeps add()'s
    expiry); 0 when the cache cannot be reached (the caller then lets the request through)."""
    try:
        if cache.add(key, 1, timeout=seconds):
            return 1
        try:
            return cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, timeout=seconds)
            return 1
    except Exception:  # noqa: BLE001 - any cache backend error
        log.warning("%s not counted (cache unreachable)", what, exc_info=True)
        return 0
