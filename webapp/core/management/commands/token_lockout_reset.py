"""Lift the API-token lockout of an address at once (ThrottledTokenAuthentication): one script with a wrong
token locks out every script behind that address, good tokens included, until the cool-off ends."""

from django.core.management.base import BaseCommand

from webapp.core.authentication import clear_token_failures


class Command(BaseCommand):
    help = ("Forget the unknown API tokens counted from ADDRESS (the address the warning "
            "'API token authentication from ADDRESS refused' names), lifting its lockout.")

    def add_arguments(self, parser):
        parser.add_argument("address", help="the client's IP address, as the server sees it")

    def handle(self, *args, address, **options):
        failures = clear_token_failures(address)
        if failures:
            self.stdout.write(f"{address}: {failures} unknown token(s) forgotten; its API tokens work again.")
        else:
            self.stdout.write(f"{address}: no unknown tokens counted; nothing to lift.")
