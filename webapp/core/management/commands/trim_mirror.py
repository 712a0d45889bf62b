"""Trim this host's media mirror to MEDIA_MIRROR_MAX_BYTES (web hosts: from cron; workers trim after each job)."""

from django.core.management.base import BaseCommand

from webapp.core import media


class Command(BaseCommand):
    help = "Remove the least recently used files of this host's media mirror beyond MEDIA_MIRROR_MAX_BYTES."

    def add_arguments(self, parser):
        parser.add_argument("--max-bytes", type=int, default=None, help="instead of MEDIA_MIRROR_MAX_BYTES")

    def handle(self, *args, max_bytes=None, **options):
        if not media.is_remote():
            self.stdout.write("STORAGE_URL is not set: media files live in MEDIA_ROOT, there is no mirror to trim.")
            return
        freed = media.trim_mirror(max_bytes)
        self.stdout.write(f"removed {freed / 1e6:.1f} MB from {media.root()}")
