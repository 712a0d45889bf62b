"""Create the object store's bucket named by STORAGE_URL when it does not exist (docker-compose's web
service runs this at start, before gunicorn): a fresh MinIO has no buckets."""

import time

from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError

from webapp.core import media


class Command(BaseCommand):
    help = "Create the STORAGE_URL bucket if it does not exist (nothing to do without STORAGE_URL)."

    def add_arguments(self, parser):
        parser.add_argument("--wait", type=float, default=30.0,
                            help="seconds to keep trying while the object store does not answer yet")

    def handle(self, *args, wait, **options):
        if not media.is_remote():
            self.stdout.write("STORAGE_URL is not set: media files are kept in MEDIA_ROOT; no bucket needed.")
            return
        from botocore.exceptions import ClientError, EndpointConnectionError

        client = default_storage.connection.meta.client
        bucket = default_storage.bucket_name
        deadline = time.monotonic() + wait
        while True:
            try:
                client.head_bucket(Bucket=bucket)
                self.stdout.write(f"Bucket {bucket!r} exists.")
                return
            except EndpointConnectionError as exc:
                if time.monotonic() >= deadline:
                    raise CommandError(f"the object store of STORAGE_URL does not answer: {exc}") from None
                time.sleep(1)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("404", "NoSuchBucket"):
                    break
                if code in ("403", "AccessDenied"):
                    raise CommandError(f"bucket {bucket!r}: access denied with the credentials of STORAGE_URL "
                                       "(it may belong to another account)") from None
                raise CommandError(f"bucket {bucket!r}: {exc}") from None
        region = client.meta.region_name
        create = {"Bucket": bucket}
        if region and region != "us-east-1":  # S3's one region that takes no location constraint
            create["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            client.create_bucket(**create)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                raise CommandError(f"could not create bucket {bucket!r}: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Created bucket {bucket!r} (private: downloads are pre-signed)."))
