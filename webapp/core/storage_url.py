"""``STORAGE_URL``: one setting that names an S3-compatible object store (framework-free: settings parse it).

Forms:

- ``s3://BUCKET`` — AWS (or whatever ``AWS_S3_ENDPOINT_URL`` names), credentials from the usual
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION`` (or an instance role);
- ``s3://KEY:SECRET@HOST[:PORT]/BUCKET[/PREFIX]`` — MinIO, Ceph, GCS interoperability and the like, over
  HTTPS; ``?secure=false`` for plain HTTP on a private network; ``?region=NAME``.

Key and secret are URL-encoded where they hold ``/``, ``@`` or ``:``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit


class StorageUrlError(ValueError):
    pass


def storage_options(url: str, environ: dict) -> dict:
    """django-storages ``S3Storage`` options for ``url``; refuses what it cannot read, saying why."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise StorageUrlError(f"STORAGE_URL must start with s3:// (got {parts.scheme or 'no'} scheme)")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"secure", "region"}
    if unknown:
        raise StorageUrlError(f"STORAGE_URL: unknown option(s) {', '.join(sorted(unknown))} (secure, region)")
    flag = query.get("secure", "true").lower()
    if flag not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise StorageUrlError(f"STORAGE_URL: secure={flag!r} is neither true nor false (secure=false for http)")
    secure = flag in ("1", "true", "yes", "on")
    try:
        port_number = parts.port
    except ValueError:
        # Most often a secret with an unencoded "/" (the rest of the URL then reads as a port): never echo it.
        raise StorageUrlError("STORAGE_URL: the part after the host's ':' is not a port number. A key or secret "
                              "holding '/', '@' or ':' must be percent-encoded ('/' as %2F)") from None
    path = [segment for segment in parts.path.split("/") if segment]
    options = {
        # Pre-signed download links lapse quickly; see MEDIA_URL_EXPIRY_S.
        "querystring_auth": True,
        "file_overwrite": True,        # names are chosen by the app (fresh folders), never by the user
        "default_acl": None,           # the bucket's own policy: private
        "signature_version": "s3v4",
        "addressing_style": "path",    # MinIO and most self-hosted stores; AWS accepts it too
    }
    if parts.hostname and (parts.username or path):
        if not path:
            raise StorageUrlError("STORAGE_URL names a host but no bucket: s3://KEY:SECRET@HOST:PORT/BUCKET")
        port = f":{port_number}" if port_number else ""
        options["endpoint_url"] = f"{'https' if secure else 'http'}://{parts.hostname}{port}"
        options["bucket_name"] = path[0]
        options["location"] = "/".join(path[1:])
        if parts.username:
            options["access_key"] = unquote(parts.username)
            options["secret_key"] = unquote(parts.password or "")
    else:
        if not parts.hostname:
            raise StorageUrlError("STORAGE_URL names no bucket: s3://BUCKET or s3://KEY:SECRET@HOST:PORT/BUCKET")
        options["bucket_name"] = parts.hostname
        if environ.get("AWS_S3_ENDPOINT_URL"):
            options["endpoint_url"] = environ["AWS_S3_ENDPOINT_URL"]
    region = query.get("region") or environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_S3_REGION_NAME")
    if region:
        options["region_name"] = region
    return options
