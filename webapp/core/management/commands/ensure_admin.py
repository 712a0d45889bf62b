import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from webapp.core.operations import do_create_admin


class Command(BaseCommand):
    help = "Create the first admin account if there is none, and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        credentials_file = settings.DATA_DIR / "admin-credentials.txt"
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            hint = f" (first-start credentials are in {credentials_file})" if credentials_file.exists() else ""
            self.stdout.write(f"Admin account exists{hint}.")
            return
        password = secrets.token_urlsafe(12)
        do_create_admin(username, password)
        credentials_file.write_text(f"username: {username}\npassword: {password}\n")
        credentials_file.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(
            f"Created the admin account.\n  username: {username}\n  password: {password}\n"
            f"  (also saved in {credentials_file}; change it on the admin site)"))
