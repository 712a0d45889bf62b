"""State changes owned by the core app: accounts and API tokens."""

from __future__ import annotations

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import transaction

from . import audit
from .domain_errors import Invalid


def do_regenerate_api_token(user, *, keep_existing: bool = False, command: str = ""):
    """Replace the user's API token (the old one stops working at once). ``keep_existing``: the token the user
    has, unchanged and not audited, and a new one only where there is none. ``command``: made by a server
    administrator with that ``manage.py`` command (the row then has no actor: the shell signs in as nobody; before,
    a token made or reset there was on no audit log)."""
    # The token model by its app label: operations stay free of the REST framework's modules.
    Token = apps.get_model("authtoken", "Token")
    with transaction.atomic():
        existing = Token.objects.select_for_update().filter(user=user).first()
        if keep_existing and existing is not None:
            return existing
        if existing is not None:
            existing.delete()
        token = Token.objects.create(user=user)
        if command:
            audit.record("account.token_regenerated", target=user, user=user.get_username(), command=command)
        else:
            audit.record("account.token_regenerated", actor=user, target=user)
    return token


def do_revoke_api_token(user, *, reason: str, actor=None) -> bool:
    """Delete the user's API token, if any (True when there was one): a new password ends what the old one
    gave, or an account taken over stays open to whoever copied its token from the account page. ``actor``: who
    revoked it, when not the user (staff on the admin site)."""
    Token = apps.get_model("authtoken", "Token")
    with transaction.atomic():
        deleted, _ = Token.objects.filter(user=user).delete()
        if deleted:
            audit.record("account.token_revoked", actor=actor or user, target=user, reason=reason)
    return bool(deleted)


def do_set_email(user, email: str, *, password: str) -> bool:
    """The user's own e-mail address (password reset links go there; admins add colleagues by it), confirmed by their
    current password: a session left open must not redirect the account's reset links elsewhere. True when it
    changed; :class:`Invalid` naming the field otherwise. Empty removes it."""
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    email = get_user_model().objects.normalize_email((email or "").strip())
    if not user.check_password(password or ""):
        raise Invalid("That is not your current password: the e-mail address was not changed.", field="password")
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise Invalid(f"{email!r} is not an e-mail address.", field="email") from None
    if email == user.email:
        return False
    with transaction.atomic():
        previous = user.email
        user.email = email
        user.save(update_fields=["email"])
        audit.record("account.email_changed", actor=user, target=user, email=email, previous=previous)
    return True


def note_a_password_change(sender, instance, **kwargs):
    """pre_save of the user model: every way a password changes (the account's form, a reset link, the admin
    site, ``manage.py changepassword``) saves the user with a new hash; post_save then revokes the token."""
    update_fields = kwargs.get("update_fields")
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return   # a new account, or a save of other fields (a login's last_login)
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._password_changed = stored is not None and stored != instance.password


def revoke_token_after_a_password_change(sender, instance, **kwargs):
    """post_save of the user model: a changed password is on the audit log (whoever changed it: the signal does not
    know; before, only the token's revocation was, and only when there was a token) and ends the API token."""
    if getattr(instance, "_password_changed", False):
        instance._password_changed = False
        with transaction.atomic():
            audit.record("account.password_changed", target=instance, user=instance.get_username())
            do_revoke_api_token(instance, reason="password changed")


def do_create_account(username: str, *, email: str = "", actor=None):
    """A colleague's account, without a password: they choose one through a set-password link
    (:func:`password_link`). :class:`django.core.exceptions.ValidationError` naming the field for a username that
    is taken or not valid, or an e-mail address that is not one; nothing is written then."""
    User = get_user_model()
    user = User(username=(username or "").strip(), email=User.objects.normalize_email((email or "").strip()))
    user.set_unusable_password()
    user.full_clean(exclude=["password"])
    with transaction.atomic():
        user.save()
        audit.record("account.created", actor=actor, target=user, user=user.get_username())
    return user


def password_link(user) -> str:
    """The path of a one-time link that sets ``user``'s password (Django's reset link: it ends when the password
    changes, or after PASSWORD_RESET_TIMEOUT)."""
    from django.contrib.auth.tokens import default_token_generator
    from django.urls import reverse
    from django.utils.encoding import force_bytes
    from django.utils.http import urlsafe_base64_encode

    return reverse("password_reset_confirm", args=[urlsafe_base64_encode(force_bytes(user.pk)),
                                                   default_token_generator.make_token(user)])


def do_create_admin(username: str, password: str, email: str = ""):
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.create_superuser(username=username, email=email, password=password)
        audit.record("account.admin_created", target=user)
    return user
