"""Django settings, read from the environment (twelve-factor).

Every variable has a safe local default so that ``python run.py`` works on a fresh machine; a
wrong value stops the start with a message that names the variable.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def _env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be {minimum} or more")
    return value


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = _env_bool("DEBUG", True)

# Local state (SQLite file, media, generated secret key, embedded Redis) lives in one folder.
DATA_DIR = Path(os.environ.get("DATA_DIR") or BASE_DIR / "var").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    # Kept in the data folder so that sessions survive restarts of a local installation.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # First: of two management commands of one name, the app listed first wins, and webapp.core's
    # drf_create_token (audited) must replace DRF's.
    "webapp.core",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "django_celery_beat",
    "axes",
    "webapp.jobs",
    "webapp.projects",
    "webapp.datasets",
    "webapp.training",
    "webapp.review",
]

MIDDLEWARE = [
    # Outermost: reads what is left of a body no view read, once the response is made (keep-alive).
    "webapp.core.middleware.DrainUnreadBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "webapp.core.middleware.PrivateCacheMiddleware",  # after WhiteNoise: static files keep their long life
    "django.contrib.sessions.middleware.SessionMiddleware",
    "webapp.core.middleware.CommonMiddleware",  # Django's, but an API write without its slash is a JSON 404
    "webapp.core.middleware.RejectMalformedRequestMiddleware",
    # An upload whose Content-Length is over MAX_UPLOAD_BYTES: 413 before its body is read.
    "webapp.core.middleware.UploadSizeMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "webapp.core.middleware.PolicyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A view's "database is locked" (SQLite) becomes a 503 with Retry-After.
    "webapp.core.middleware.DatabaseBusyMiddleware",
    # So does one that could not reach the object store (STORAGE_URL).
    "webapp.core.middleware.StorageUnreachableMiddleware",
    # One that filled the server's disk (ENOSPC) is a 507 saying so.
    "webapp.core.middleware.DiskFullMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'db.sqlite3'}"
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:  # dj-database-url raises several types for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL={url!r} is not a database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine not in {"django.db.backends.sqlite3", "django.db.backends.postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL={url!r}: only sqlite:// and postgres:// are supported")
    if engine == "django.db.backends.sqlite3":
        config["CONN_MAX_AGE"] = 0
        # Web server, worker and beat share the file: wait for locks instead of failing at once.
        # auto_vacuum first: SQLite takes it only before the first table exists, so it counts for a new file (its
        # free pages are given back by webapp.core.sqlite_space); the WAL is cut back to 64 MiB after a checkpoint
        # (a large deletion grew it to its size, kept for good).
        config["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE",
                             "init_command": "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; "
                                             "PRAGMA journal_size_limit=67108864;"}
        # A file (not :memory:) so that a real Celery worker process can see the test data.
        config["TEST"] = {"NAME": str(DATA_DIR / f"test_{os.getpid()}.sqlite3")}
    return config


DATABASES = {"default": _database()}
# A second connection to the same database, for job progress written while a job holds a transaction
# open on "default" (an import stores its rows in one): committed at once, so the API and the pages see
# it and a cancel need not wait for the import (webapp.jobs.operations.do_report_progress).
PROGRESS_DATABASE = "progress"
DATABASES[PROGRESS_DATABASE] = {**DATABASES["default"], "OPTIONS": dict(DATABASES["default"].get("OPTIONS", {})),
                                "TEST": {**DATABASES["default"].get("TEST", {}), "MIRROR": "default"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# SQLite: the periodic sweep gives free pages back once they are this many bytes and this share of the file;
# a file made before incremental auto_vacuum is VACUUMed (every save waits meanwhile) only up to the size below
# (webapp.core.sqlite_space, README "Troubleshooting").
SQLITE_RECLAIM_MIN_BYTES = 32 * 1024**2
SQLITE_RECLAIM_SHARE = 0.2
SQLITE_VACUUM_MAX_BYTES = 256 * 1024**2

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Brute-force protection (django-axes) for the login page and the admin login: after LOGIN_FAILURE_LIMIT
# wrong passwords for one username from one address, that pair is refused (even with the right password)
# for LOGIN_COOLOFF_MINUTES; an admin lifts it sooner with `manage.py axes_reset` or on the admin site.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before the password is checked
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_FAILURE_LIMIT = _env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_COOLOFF_MINUTES = _env_int("LOGIN_COOLOFF_MINUTES", 15)
if LOGIN_FAILURE_LIMIT < 1 or LOGIN_COOLOFF_MINUTES < 1:
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT and LOGIN_COOLOFF_MINUTES must be 1 or more")
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"  # no extra service: attempts are rows
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Behind a reverse proxy every client has the proxy's address: TRUSTED_PROXY_COUNT proxies that set
# X-Forwarded-For make the client's own address count instead (never set it without such a proxy: the
# header would then be the client's to forge).
TRUSTED_PROXY_COUNT = _env_int("TRUSTED_PROXY_COUNT", 0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured(f"TRUSTED_PROXY_COUNT={TRUSTED_PROXY_COUNT} must be 0 (no proxy) or more")
AXES_CLIENT_IP_CALLABLE = "webapp.core.authentication.client_ip"
# API tokens: after TOKEN_FAILURE_LIMIT unknown tokens from one address within LOGIN_COOLOFF_MINUTES, that
# address gets 429 for every token until the cool-off ends (webapp.core.authentication).
TOKEN_FAILURE_LIMIT = _env_int("TOKEN_FAILURE_LIMIT", 10)
# Password reset e-mails: at most this many an hour per requesting address and per e-mail address
# (webapp.core.passwords).
PASSWORD_RESET_LIMIT = _env_int("PASSWORD_RESET_LIMIT", 5, minimum=1)
if TOKEN_FAILURE_LIMIT < 1:
    raise ImproperlyConfigured("TOKEN_FAILURE_LIMIT must be 1 or more")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- E-mail (password reset links) --------------------------------------------------------------
# Without EMAIL_HOST, mails are printed on the web server's console (development: copy the link from
# there); with it, they are sent by SMTP. EMAIL_BACKEND overrides the choice (any Django backend path).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend")
EMAIL_PORT = _env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = _env_bool("EMAIL_USE_SSL", False)  # implicit TLS, usually port 465
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other: set one of them")
EMAIL_TIMEOUT = _env_int("EMAIL_TIMEOUT", 10, minimum=1)  # seconds: a dead mail server must not hang a request
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL") or "Nucleus merge <nucleus-merge@localhost>"
# A reset link works once, and for a day at most.
PASSWORD_RESET_TIMEOUT = 24 * 3600

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or DATA_DIR / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or DATA_DIR / "media").resolve()
# A mounted share of whole-slide images (1-5 GB each) that curators register by a path under it, instead of
# uploading them; unset, slides can only be uploaded.
SLIDES_ROOT = Path(os.environ["SLIDES_ROOT"]).resolve() if os.environ.get("SLIDES_ROOT") else None
# Deep Zoom tiles of the slide viewer kept as files under DATA_DIR/cache/slide-tiles (per host; oldest removed first).
SLIDE_TILE_CACHE_BYTES = _env_int("SLIDE_TILE_CACHE_BYTES", 2 * 1024**3, minimum=0)
# Object storage for every media file (webapp.core.media): an S3-compatible store named by STORAGE_URL, so
# that web servers and workers on different hosts share no file system. Unset: MEDIA_ROOT on this disk.
STORAGE_URL = os.environ.get("STORAGE_URL", "").strip()
# In remote mode each process keeps the media files it used in this local mirror (a cache; MEDIA_ROOT unused).
MEDIA_MIRROR = Path(os.environ.get("MEDIA_MIRROR") or DATA_DIR / "media-mirror").resolve()
# The most a host's mirror keeps after its jobs (least recently used files go first); 0: nothing (scratch only).
MEDIA_MIRROR_MAX_BYTES = _env_int("MEDIA_MIRROR_MAX_BYTES", 20 * 1024**3, minimum=0)
# A pre-signed download link lapses this many seconds after the permission check that gave it.
MEDIA_URL_EXPIRY_S = _env_int("MEDIA_URL_EXPIRY_S", 120, minimum=1)
if STORAGE_URL:
    from webapp.core.storage_url import StorageUrlError, storage_options

    try:
        _default_storage = {"BACKEND": "storages.backends.s3.S3Storage",
                            "OPTIONS": {**storage_options(STORAGE_URL, os.environ),
                                        "querystring_expire": MEDIA_URL_EXPIRY_S}}
    except StorageUrlError as exc:
        raise ImproperlyConfigured(str(exc)) from None
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
                    if not DEBUG else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Uploads: archives bigger than this are refused before they are unpacked.
MAX_UPLOAD_BYTES = _env_int("MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1)
# What an archive may unpack to (zip bombs stop there, from the headers and again while writing). Instance masks
# compress several times over (a 1.07 GB zip of 10,000 tiles of 256 px unpacks to 3.6 GB): four times the upload.
MAX_UNPACKED_BYTES = _env_int("MAX_UNPACKED_BYTES", 4 * MAX_UPLOAD_BYTES, minimum=1)
# Whole-slide images and their detections sent in chunks (resumable, webapp.datasets.slide_uploads): the
# largest file accepted.
SLIDE_UPLOAD_MAX_BYTES = _env_int("SLIDE_UPLOAD_MAX_BYTES", 20 * 1024**3, minimum=1)
# The labelled nuclei of the project's slides a training takes, all slides together (the reviews first): each
# crop is held in memory, 24 KiB with the default crops, twice over while the table is built
# (webapp.training.slide_data).
SLIDE_TRAINING_MAX_NUCLEI = _env_int("SLIDE_TRAINING_MAX_NUCLEI", 20_000, minimum=0)
# Processes that prepare the images of an import (read, checksum, files, outlines); 0 = one per CPU core,
# 1 = in the importing process itself.
IMPORT_PROCESSES = _env_int("IMPORT_PROCESSES", 0)
if IMPORT_PROCESSES < 0:
    raise ImproperlyConfigured(f"IMPORT_PROCESSES={IMPORT_PROCESSES} must be 0 (one per core) or more")
# The readers' size limits (MAX_IMAGE_PIXELS, MAX_ARRAY_BYTES, MAX_JSON_BYTES) are mlcore's, read from the
# environment there; imported here so that a wrong value stops the start.
try:
    import mlcore.limits  # noqa: F401
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2

# --- Redis and Celery -------------------------------------------------------------------------
# The run command starts an embedded Redis on this port when REDIS_URL is not set.
EMBEDDED_REDIS_PORT = _env_int("EMBEDDED_REDIS_PORT", 6390)
REDIS_URL = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://")

# The cache (the health endpoint's worker status, among others): shared by every web process through
# Redis in production, in memory in development and tests. It shares Redis's database with Celery, under
# its own prefix: never call cache.clear() there, which would empty Celery's queues too.
_SERVER_CACHE = {"BACKEND": "webapp.core.cache.ReusedClientRedisCache", "LOCATION": REDIS_URL,
                 "KEY_PREFIX": "nm-cache", "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}
# "server": the served installation's cache whatever this process's DEBUG says, for the management commands
# that change what the web processes count (manage.py run by hand has DEBUG on unless told, run.py sets it off).
CACHES = {"default": _SERVER_CACHE if not DEBUG else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
          "server": _SERVER_CACHE}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ACKS_LATE = True                # a task lost with its worker is delivered again...
CELERY_TASK_REJECT_ON_WORKER_LOST = True    # ...instead of being acknowledged as if it had run
CELERY_WORKER_PREFETCH_MULTIPLIER = 1       # long ML tasks: never hoard messages
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"workers.tasks.gpu.*": {"queue": "gpu"}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# How long a job of each kind may run: {kind: (soft, hard)} seconds, passed with each job's message
# (webapp.jobs.operations); the soft limit ends the job as failed and removes its folders.
try:
    from webapp.core.job_time_limits import JobTimeLimitsError, job_time_limits

    JOB_TIME_LIMITS = job_time_limits(os.environ.get("JOB_TIME_LIMITS"))
except JobTimeLimitsError as exc:
    raise ImproperlyConfigured(str(exc)) from None
# Redis hands an unacknowledged message (acks_late) to another worker once this long has passed: longer
# than any job may run, or a long training would be started twice (Celery's documented caveat).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": max(hard for _, hard in JOB_TIME_LIMITS.values())
                                                         + 3600}
# A worker that consumes the "gpu" queue refuses to start without CUDA (workers/celery.py) unless this is
# set: run.py's single local worker and the test suite's take both queues on machines without a GPU.
ALLOW_CPU_GPU_QUEUE = _env_bool("ALLOW_CPU_GPU_QUEUE", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
# Fail fast when Redis is down so that the web layer can answer 503 instead of hanging.
CELERY_BROKER_CONNECTION_TIMEOUT = 3

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        # The browsable API, for people exploring the API while logged in; its one inline style is let in by
        # hash on its own pages only (webapp/core/renderers.py).
        "webapp.core.renderers.PolicyBrowsableAPIRenderer",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.core.authentication.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Who may call what: the declared table of webapp.core.policy (project roles are checked by the views).
    "DEFAULT_PERMISSION_CLASSES": ["webapp.core.policy.PolicyPermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "webapp.core.pagination.PagePagination",
    # DRF's three, with a JSON parser that answers a body nested too deeply with a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": ["webapp.core.parsers.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "webapp.core.api_errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Nucleus merge API",
    "DESCRIPTION": "Merge nucleus datasets with different taxonomies by correlation-based cross training.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Docs assets are served from the sidecar package: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["webapp.core.policy.PolicyPermission"],
    # Request bodies get components of their own, where a file field is binary (multipart), not a URL string.
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "webapp.core.schema.document_error_responses"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"refusal_without_traceback": {"()": "webapp.core.log_filters.RefusalWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"filters": ["refusal_without_traceback"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# --- HTTPS and security headers (README, "Security") ------------------------------------------------
# Cookies only over HTTPS when DEBUG is off; SECURE_COOKIES=0 for a plain-HTTP trial on a private host.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
# HSTS: browsers keep to HTTPS for this host for a year once they have seen it over HTTPS (the
# header is ignored on plain HTTP, so it does no harm to a local start).
SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(f"SECURE_HSTS_SECONDS={SECURE_HSTS_SECONDS} must be 0 (off) or more")
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
# Preloading is for public domains submitted to the browsers' list; a hospital's internal host is not
# one, so it is opt-in and its deployment-check warning is silenced while it is off.
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Off by default so that a plain-HTTP start (run.py on this machine) works; production sets it (README).
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]  # load balancers probe over plain HTTP


def _proxy_ssl_header() -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto: a request is HTTPS when the TLS-terminating proxy in
    front sets that header to "https". Only for a proxy that always sets or strips it."""
    raw = os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip()
    if not raw:
        return None
    if not all(part.isalnum() for part in raw.split("-")):
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER={raw!r} is not a header name such as X-Forwarded-Proto")
    return "HTTP_" + raw.upper().replace("-", "_"), "https"


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header()
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp): scripts, styles and everything else from this origin only, no
# inline script or style (templates and static/js keep to that; tests/webapp/core/test_escaping.py checks),
# no plugins, no framing. The API docs pages widen it for themselves only (webapp/core/api_docs.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
