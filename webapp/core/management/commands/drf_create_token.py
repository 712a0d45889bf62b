"""DRF's ``drf_create_token``, with its arguments and output, through the domain function: a token made or reset
(``-r``) from the shell is an ``account.token_regenerated`` row on the audit log, as one made on the account page
is (DRF's command wrote the token table directly). This app comes before ``rest_framework.authtoken`` in
INSTALLED_APPS, so this command is the one ``manage.py`` runs."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.core.operations import do_regenerate_api_token


class Command(BaseCommand):
    help = "Create DRF Token for a given user (on the audit log)"

    def add_arguments(self, parser):
        parser.add_argument("username", type=str)
        parser.add_argument("-r", "--reset", action="store_true", dest="reset_token", default=False,
                            help="Reset existing User token and create a new one")

    def handle(self, *args, username, reset_token, **options):
        User = get_user_model()
        try:
            user = User._default_manager.get_by_natural_key(username)
        except User.DoesNotExist:
            raise CommandError(f"Cannot create the Token: user {username} does not exist") from None
        token = do_regenerate_api_token(user, keep_existing=not reset_token, command="drf_create_token")
        self.stdout.write(f"Generated token {token.key} for user {username}")
