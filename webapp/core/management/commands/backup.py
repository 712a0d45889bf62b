"""manage.py backup DEST: the database and the media files into a new folder, while the server runs (README
"Backups"; webapp.backup)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from webapp import backup


class Command(BaseCommand):
    help = ("Back up the database (SQLite's online backup, or pg_dump) and the media files into DEST, a new or empty "
            "folder, while the server and the workers run. DEST/manifest.json says what it holds.")

    def add_arguments(self, parser):
        parser.add_argument("dest", type=Path, help="a new or empty folder, e.g. /backups/nucleus-merge-$(date +%%F)")

    def handle(self, *args, dest, **options):
        bars = []

        def progress_bar(total):
            bars.append(tqdm(total=total, desc="copying media", unit="B", unit_scale=True, unit_divisor=1024,
                             disable=None if options.get("verbosity", 1) else True))
            return bars[-1].update

        try:
            result = backup.backup(dest, progress_bar=progress_bar)
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        finally:
            for bar in bars:
                bar.close()
        manifest = result.manifest
        database, files = manifest["database"], manifest["media"]
        rows = database["rows"]
        self.stdout.write(f"backed up to {dest.resolve()}:")
        self.stdout.write(f"  database ({database['engine']}): {database['file']}, {database['bytes'] / 1e6:.1f} MB, "
                          f"{sum(rows.values())} rows ({rows.get('projects.Project', 0)} projects, "
                          f"{rows.get('datasets.Image', 0)} images, {rows.get('datasets.Nucleus', 0)} nuclei, "
                          f"{rows.get('datasets.Label', 0)} labels, {rows.get('training.ModelVersion', 0)} model "
                          f"versions), {len(database['migrations'])} migrations applied")
        if files["storage"] == "remote":
            self.stdout.write(self.style.WARNING(
                f"  media: not copied, they are in the object store (bucket {files.get('bucket')!r}, "
                f"{files['named_by_rows']} files named by the rows, all in it): keep them with the bucket's own versioning or "
                "replication (README \"Backups\")"))
        else:
            self.stdout.write(f"  media: {len(files['files'])} files, {files['bytes'] / 1e6:.1f} MB "
                              f"({files['named_by_rows']} named by the rows, all present)")
        if result.snapshots > 1:
            self.stdout.write(f"  files were deleted while they were copied: the database was copied "
                              f"{result.snapshots} times, the last copy names no missing file")
