"""State changes owned by the core app: accounts and API tokens."""

from __future__ import annotations

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import transaction

from . import audit


def do_regenerate_api_token(user):
    """Replace the user's API token (the old one stops working at once)."""
    # The token model by its app label: operations stay free of the REST framework's modules.
    Token = apps.get_model("authtoken", "Token")
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
        audit.record("account.token_regenerated", actor=user, target=user)
    return token


def do_create_admin(username: str, password: str, email: str = ""):
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.create_superuser(username=username, email=email, password=password)
        audit.record("account.admin_created", target=user)
    return user
