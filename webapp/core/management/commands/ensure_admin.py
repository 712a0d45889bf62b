import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
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
        password = self.generated_password(User(username=username))
        do_create_admin(username, password)
        credentials_file.write_text(f"username: {username}\npassword: {password}\n")
        credentials_file.chmod(0o600)
        self.stdout.write(self.style.SUCCESS(
            f"Created the admin account.\n  username: {username}\n  password: {password}\n"
            f"  (also saved in {credentials_file}; change it on the admin site)"))

    @staticmethod
    def generated_password(user) -> str:
        """A random password that the configured validators accept (16 URL-safe characters: a draw
        that looks too much like the username, say, is simply drawn again)."""
        while True:
            password = secrets.token_urlsafe(12)
            try:
                validate_password(password, user)
            except ValidationError:
                continue
            return password
