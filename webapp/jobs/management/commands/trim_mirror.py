"""Clean this host's media mirror: forget what no row or running job names any more (deleted datasets and projects,
what killed jobs left), then trim it to MEDIA_MIRROR_MAX_BYTES (web hosts: from cron; workers do both after each
job). Here, in the jobs app, because the rules of what is orphaned are the sweep's (webapp.jobs.sweep)."""

from django.core.management.base import BaseCommand

from webapp.core import media
from webapp.jobs.sweep import sweep_mirror


class Command(BaseCommand):
    help = ("Remove from this host's media mirror what no row or running job names, then the least recently used "
            "files beyond MEDIA_MIRROR_MAX_BYTES.")

    def add_arguments(self, parser):
        parser.add_argument("--max-bytes", type=int, default=None, help="instead of MEDIA_MIRROR_MAX_BYTES")

    def handle(self, *args, max_bytes=None, **options):
        if not media.is_remote():
            self.stdout.write("STORAGE_URL is not set: media files live in MEDIA_ROOT, there is no mirror to trim.")
            return
        forgotten = sweep_mirror()
        freed = media.trim_mirror(max_bytes)
        self.stdout.write(f"forgot {len(forgotten)} orphaned folders; removed {freed / 1e6:.1f} MB from {media.root()}")
