"""Make a colleague's account from the shell and print a one-time link with which they choose their password: no
password passes through the person who made it, and no mail server is needed. ``--link`` prints a new link for an
existing account (the first one expired, or a forgotten password of an account without an e-mail address)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from webapp.core.operations import do_create_account, password_link


class Command(BaseCommand):
    help = ("Create an account without a password and print a link with which its owner sets one "
            "(then an admin of a project adds them on its Members page).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="", help="their e-mail address (password resets, being added by it)")
        parser.add_argument("--url", default="http://127.0.0.1:8000",
                            help="the address colleagues open the site at (default: %(default)s)")
        parser.add_argument("--link", action="store_true",
                            help="the account exists: print a new set-password link for it")

    def handle(self, *args, username, email, url, link, **options):
        if link:
            user = get_user_model().objects.filter(username=username, is_active=True).first()
            if user is None:
                raise CommandError(f"No active account has the username {username!r}.")
        else:
            try:
                user = do_create_account(username, email=email)
            except ValidationError as exc:
                problems = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
                raise CommandError(f"No account was created: {problems}") from None
            self.stdout.write(f"Created the account {user.get_username()!r}.")
        hours = settings.PASSWORD_RESET_TIMEOUT // 3600
        self.stdout.write(f"Send them this link to choose their password (it works once, for {hours} hours):\n"
                          f"  {url.rstrip('/')}{password_link(user)}")
