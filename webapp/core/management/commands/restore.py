"""manage.py restore SRC: a backup made by manage.py backup into this (empty) installation (README "Backups";
webapp.backup)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from webapp import backup


class Command(BaseCommand):
    help = ("Restore a backup made by `manage.py backup` into this installation's database (DATABASE_URL) and "
            "media folder, then migrate it forward to this release. Refuses an installation that holds projects "
            "or media files unless --force (which replaces them). Stop the server and the workers first.")

    def add_arguments(self, parser):
        parser.add_argument("src", type=Path, help="the backup's folder (it holds manifest.json)")
        parser.add_argument("--force", action="store_true",
                            help="replace what this installation holds (its database and media files)")

    def handle(self, *args, src, force, **options):
        bars = []
        quiet = not options.get("verbosity", 1)

        def progress_bar(total):
            bars.append(tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=True if quiet else None))
            return bars[-1].update

        def say(line):
            for bar in bars:
                bar.close()
            if not quiet:
                self.stdout.write(line)

        try:
            manifest = backup.read_manifest(src)
            result = backup.restore(src, force=force, progress_bar=progress_bar, say=say)
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        finally:
            for bar in bars:
                bar.close()
        rows = manifest["database"]["rows"]
        self.stdout.write(f"restored the backup of {manifest['created_at']} (release {manifest.get('release') or 'unknown'}"
                          f"): {sum(rows.values())} rows, {result.files} media files"
                          + (f"; migrated forward by {len(result.migrated)} migrations" if result.migrated else ""))
        if result.ended_jobs:
            self.stdout.write(f"{len(result.ended_jobs)} jobs that were queued or running at the backup ended as "
                              f"failed (start them again): {', '.join(str(job.pk) for job in result.ended_jobs)}")
        if manifest["media"]["storage"] == "remote" and result.missing_in_bucket:
            missing = result.missing_in_bucket
            self.stdout.write(self.style.WARNING(
                f"{len(missing)} media files the restored database names are not in the bucket (STORAGE_URL), e.g. "
                f"{', '.join(missing[:3])}: restore the bucket as it was at {manifest['created_at']} from its "
                "versioning or replica (the media files are not in the backup)"))
        elif manifest["media"]["storage"] == "remote":
            self.stdout.write("the bucket (STORAGE_URL) holds every media file the restored database names")
