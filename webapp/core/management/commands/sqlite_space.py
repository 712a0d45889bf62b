from django.core.management.base import BaseCommand, CommandError

from webapp.core import sqlite_space


class Command(BaseCommand):
    help = ("Show the SQLite database's size, free pages and auto_vacuum mode; --vacuum rewrites it (VACUUM: every "
            "save waits meanwhile), giving every free page back and turning incremental auto_vacuum on.")

    def add_arguments(self, parser):
        parser.add_argument("--vacuum", action="store_true", help="VACUUM the database now, whatever its size")

    def handle(self, *args, vacuum, **options):
        space = sqlite_space.space()
        if space is None:
            raise CommandError("the database is not SQLite (PostgreSQL's autovacuum gives space back by itself)")
        self.stdout.write(self.describe(space))
        if vacuum:
            if sqlite_space.reclaim_free_pages(force_vacuum=True) is None:
                raise CommandError("the VACUUM did not run: see the warning above")
            self.stdout.write("after the VACUUM: " + self.describe(sqlite_space.space()))

    @staticmethod
    def describe(space) -> str:
        mode = {0: "none", 1: "full", 2: "incremental"}.get(space.auto_vacuum, str(space.auto_vacuum))
        return (f"{sqlite_space.database_file().name}: {space.bytes / 2**20:.1f} MiB, {space.free_bytes / 2**20:.1f} "
                f"MiB of it free ({space.free} of {space.pages} pages), auto_vacuum {mode}")
