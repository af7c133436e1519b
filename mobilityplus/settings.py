"""Settings for the MobilityPlus roaming platform.

Everything that differs between a laptop and production comes from the environment.
With no environment at all, the platform runs on a SQLite file with Celery tasks executed
in-process, so `make demo` needs no server.
"""

import datetime as dt
import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab  # noqa: F401  (kept at hand for schedule entries)
from cryptography.fernet import Fernet
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from mobilityplus.content_policy import tile_source

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Development mode only when asked for (DEBUG=true, as `make demo` and the test settings do): a server
# started without it is a production server, whatever else is missing.
DEBUG = env_bool("DEBUG", default=False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off. Generate one with: "
            'python -c "import secrets; print(secrets.token_urlsafe(50))" '
            "(DEBUG=true, for local development only, uses a public built-in key instead)."
        )
    SECRET_KEY = "dev-only-insecure-key-for-the-embedded-demo-never-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "mobilityplus.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles: runserver leaves static files to whitenoise as gunicorn does.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "leaflet",
    "simple_history",
    "axes",
    "csp",
    "roaming",
    "cards",
    "stations",
    "charging",
    "tariffs",
    "console",  # the staff console stands on every app above: last
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from gunicorn (`make serve`): compressed, with content-hashed names cached for a year.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Staff read times in their own zone (console.StaffPreference, else STAFF_TIME_ZONE); nobody else is touched.
    "console.middleware.StaffTimeZoneMiddleware",
    # Last: turns a login refused by AxesBackend into the lockout page (HTTP 429).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "mobilityplus.urls"

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

WSGI_APPLICATION = "mobilityplus.wsgi.application"
ASGI_APPLICATION = "mobilityplus.asgi.application"

# Database: DATABASE_URL, or a SQLite file in the project (the embedded default).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Tests on SQLite use a file, not shared-cache memory: there a reader makes a Celery worker thread's
    # write fail at once ("table is locked") instead of waiting its turn.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
else:
    # faults: an unreachable database host fails a connection attempt after this long instead of hanging.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = int(os.environ.get("DB_CONNECT_TIMEOUT_S", "2"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: broker and cache when set; otherwise tasks run in-process and the cache is local memory.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # faults: a Redis that is down or slow degrades to no cache (misses, writes dropped), never to a 500.
    CACHE_SOCKET_TIMEOUT_S = float(os.environ.get("CACHE_SOCKET_TIMEOUT_S", "0.5"))
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": CACHE_SOCKET_TIMEOUT_S,
                "SOCKET_TIMEOUT": CACHE_SOCKET_TIMEOUT_S,
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# /healthz: how long its database and broker checks may take (together) before the part counts as unavailable.
HEALTHZ_TIMEOUT_S = float(os.environ.get("HEALTHZ_TIMEOUT_S", "1.5"))

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
# A task whose worker process died (SIGKILL, OOM) goes back to the queue instead of being marked failed.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Redis hands a message whose worker vanished without acking to another worker only after this many seconds.
# It must exceed the longest countdown/ETA (token pushes back off up to 600 s) and any task that must not run
# twice; a location pull redelivered while still running finds its lock held and does nothing.
BROKER_VISIBILITY_TIMEOUT_S = int(os.environ.get("BROKER_VISIBILITY_TIMEOUT_S", "900"))
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": BROKER_VISIBILITY_TIMEOUT_S,
    # Look for such messages every few seconds (kombu's default is every 100 s).
    "unacked_restore_interval": max(1, min(10, BROKER_VISIBILITY_TIMEOUT_S // 3)),
    "unacked_restore_throttle": 1,
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# faults: queuing a task (a driver's "Start charging") gives up within about CELERY_PUBLISH_TIMEOUT_S when the
# broker is unreachable, so the request can say so instead of hanging (workers keep retrying their own link).
CELERY_PUBLISH_TIMEOUT_S = float(os.environ.get("CELERY_PUBLISH_TIMEOUT_S", "1"))
CELERY_BROKER_CONNECTION_TIMEOUT = CELERY_PUBLISH_TIMEOUT_S
# Added to the visibility settings above (one dict: a second assignment would drop them).
CELERY_BROKER_TRANSPORT_OPTIONS["socket_connect_timeout"] = CELERY_PUBLISH_TIMEOUT_S
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# The Redis result store is reached when a task is queued too (it would retry 20 times, one a second).
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": CELERY_TASK_PUBLISH_RETRY_POLICY,
    "socket_connect_timeout": CELERY_PUBLISH_TIMEOUT_S,
}
# Periodic work; each entry's task lives in the app that owns it.
CELERY_BEAT_SCHEDULE: dict[str, dict] = {}
# charging: commands whose CommandResult never came within the CPO's timeout become "timed out".
CELERY_BEAT_SCHEDULE["charging-expire-commands"] = {"task": "charging.expire_commands", "schedule": 30.0}
# charging: partners' command results that could not be queued (broker down) are posted once it is back.
CELERY_BEAT_SCHEDULE["charging-repost-command-results"] = {"task": "charging.repost_command_results", "schedule": 60.0}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Production: `collectstatic` (run by `make serve`) writes gzip/brotli copies and a manifest of hashed names,
    # so a changed file gets a new URL and every file can be cached for a year. Development reads the sources.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "mobilityplus.static_files.StaticFilesStorage"
    },
}
# Development (and tests) serve the sources through the finders; production only what collectstatic wrote.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"  # drivers; staff land on the staff overview (console.views.LandingLoginView)
# The zone staff see times in unless they chose their own (docs/staff-console.md). Stored times stay UTC.
STAFF_TIME_ZONE = os.environ.get("STAFF_TIME_ZONE", "Europe/Brussels")
# /metrics (Prometheus): a scraper sends "Authorization: Bearer <METRICS_TOKEN>"; staff logged in may read it too.
# Unset: only logged-in staff. With several gunicorn workers set PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py does).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
LOGOUT_REDIRECT_URL = "/"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    # Bad input is always a DRF JSON 400, never a 500 or Django's HTML page (docs/rest-api.md).
    "DEFAULT_PARSER_CLASSES": [
        "mobilityplus.api_parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "mobilityplus.api_errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MobilityPlus roaming platform API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from our own static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One name for the card types wherever a field takes one (`type` of authorizations, `token_type` of sessions).
    "ENUM_NAME_OVERRIDES": {"CardTypeEnum": "charging.backend_api.CARD_TYPES"},
}

# Map tiles: any OpenStreetMap-style tile URL template.
MAP_TILES_URL = os.environ.get("MAP_TILES_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png")
MAP_TILES_ATTRIBUTION = os.environ.get("MAP_TILES_ATTRIBUTION", "&copy; OpenStreetMap contributors")
LEAFLET_CONFIG = {
    "DEFAULT_CENTER": (50.85, 4.35),
    "DEFAULT_ZOOM": 7,
    "MIN_ZOOM": 3,
    "MAX_ZOOM": 19,
    "TILES": [("OpenStreetMap", MAP_TILES_URL, {"attribution": MAP_TILES_ATTRIBUTION})],
    "RESET_VIEW": False,
}

# Content-Security-Policy (django-csp) on every page: scripts and styles only from our own static files (or an
# element carrying the page's nonce), data only from our own origin, images also from the tile server.
# docs/security-deployment.md says how pages keep to it.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [
            SELF,
            NONCE,
            # Inline style attributes of third-party pages, each admitted by its exact text's hash only.
            "'unsafe-hashes'",
            "'sha256-XMXSevYjgSjXgRafBFDvtjwX+yyWLrxfso9DcNZ9UXM='",  # simple_history's paginator: border-top: 0
            "'sha256-OfgyIBrd+/vP79JdFMYP+re4T+fIenvkrHPD2HZ8/cs='",  # DRF's filter button: float: right; margin-...
        ],
        "img-src": [SELF, "data:", *filter(None, [tile_source(MAP_TILES_URL)])],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# OCPI: who we are on the wire.
OCPI_COUNTRY_CODE = os.environ.get("OCPI_COUNTRY_CODE", "BE")
OCPI_PARTY_ID = os.environ.get("OCPI_PARTY_ID", "MBP")
OCPI_BUSINESS_NAME = os.environ.get("OCPI_BUSINESS_NAME", "MobilityPlus")
OCPI_BUSINESS_WEBSITE = os.environ.get("OCPI_BUSINESS_WEBSITE", "https://www.mobilityplus.be")
# Public base URL partners use to reach us (versions URL = OCPI_BASE_URL + /ocpi/versions).
OCPI_BASE_URL = os.environ.get("OCPI_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Key for encrypting the tokens we must send to partners (Fernet, urlsafe base64, 32 bytes).
# Required when DEBUG is off; in development (DEBUG=true) it may be unset and is then derived from SECRET_KEY.
OCPI_TOKEN_ENCRYPTION_KEY = os.environ.get("OCPI_TOKEN_ENCRYPTION_KEY", "")
if not OCPI_TOKEN_ENCRYPTION_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "OCPI_TOKEN_ENCRYPTION_KEY must be set when DEBUG is off (it encrypts the tokens we send to partners). "
        "Generate one with: python -c "
        '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" '
        "(a deployment that already stores partner tokens: see docs/security-deployment.md to keep them readable)."
    )
if OCPI_TOKEN_ENCRYPTION_KEY:
    try:
        Fernet(OCPI_TOKEN_ENCRYPTION_KEY)
    except ValueError as exc:  # caught here, not at the first partner handshake
        raise ImproperlyConfigured(
            "OCPI_TOKEN_ENCRYPTION_KEY is not a Fernet key (32 bytes, urlsafe base64). Generate one with: "
            'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        ) from exc
OCPI_HTTP_TIMEOUT_S = float(os.environ.get("OCPI_HTTP_TIMEOUT_S", "10"))
OCPI_HTTP_RETRIES = int(os.environ.get("OCPI_HTTP_RETRIES", "3"))
# Calls carrying a partner's token may go to loopback/private/link-local addresses only when this is on
# (the demo and tests, whose partners run on 127.0.0.1); off in production. docs/security-outgoing-calls.md
OCPI_ALLOW_PRIVATE_NETWORK_URLS = env_bool("OCPI_ALLOW_PRIVATE_NETWORK_URLS", default=DEBUG)
# How often each process checks whether parties, connections or agreements changed elsewhere (one query on
# roaming's change counter; changes in-process apply at once). See docs/security-partners.md.
ROAMING_CHANGES_CHECK_S = float(os.environ.get("ROAMING_CHANGES_CHECK_S", "0.5"))
# Partner timestamps (last_updated, session and CDR times) later than now + this are refused with 2001.
OCPI_MAX_CLOCK_SKEW_SECONDS = int(os.environ.get("OCPI_MAX_CLOCK_SKEW_SECONDS", "300"))

# Production hardening, active whenever DEBUG is off.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The handler's level too: Django's own loggers (django.request's warning for every 4xx among them) carry
    # their own level and reach this handler past the root's.
    "handlers": {"console": {"class": "logging.StreamHandler", "level": LOG_LEVEL}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# Cards and authorization (cards app).
# Whitelist new RFID cards get: ALLOWED_OFFLINE lets a CPO that cannot reach us still let the driver charge.
CARDS_DEFAULT_RFID_WHITELIST = os.environ.get("CARDS_DEFAULT_RFID_WHITELIST", "ALLOWED_OFFLINE")
# Our stations: how long we wait for the issuing eMSP's real-time answer before the cached token decides.
CARDS_REALTIME_DEADLINE_S = float(os.environ.get("CARDS_REALTIME_DEADLINE_S", "1.5"))
# faults (docs/faults.md): real-time calls share a pool; each eMSP may hold this many of its threads at once.
CARDS_REALTIME_POOL_SIZE = int(os.environ.get("CARDS_REALTIME_POOL_SIZE", "32"))
CARDS_REALTIME_PARTNER_CONCURRENCY = int(os.environ.get("CARDS_REALTIME_PARTNER_CONCURRENCY", "4"))
# Requests of this server (all its workers and threads) that may wait on one eMSP's answer at once, and on all eMSPs
# together; beyond: the cached token at once (cards/realtime_waits.py). Sized for 3 gthread workers x 8 threads; with
# sync workers, where each waiting request holds a whole worker, set 1 and fewer than the workers (docs/faults.md).
CARDS_REALTIME_PARTNER_WAITING = int(os.environ.get("CARDS_REALTIME_PARTNER_WAITING", "4"))
CARDS_REALTIME_WAITING_TOTAL = int(os.environ.get("CARDS_REALTIME_WAITING_TOTAL", "12"))
# Where the slots' lock files live (local to the server); empty: a directory per deployment under the temp dir.
CARDS_REALTIME_WAITS_DIR = os.environ.get("CARDS_REALTIME_WAITS_DIR", "")
# ...and after this many failed calls within the window the eMSP is not asked for the cool-down (circuit open).
CARDS_CIRCUIT_FAILURES = int(os.environ.get("CARDS_CIRCUIT_FAILURES", "3"))
CARDS_CIRCUIT_WINDOW_S = float(os.environ.get("CARDS_CIRCUIT_WINDOW_S", "30"))
CARDS_CIRCUIT_COOLDOWN_S = float(os.environ.get("CARDS_CIRCUIT_COOLDOWN_S", "30"))
# Database reads on the authorization path give up after this long (PostgreSQL statement_timeout, SET LOCAL).
CARDS_DB_STATEMENT_TIMEOUT_MS = int(os.environ.get("CARDS_DB_STATEMENT_TIMEOUT_MS", "500"))
# Authorization decision log: buffered per process and written in bulk every this many seconds (0 = at once).
CARDS_DECISION_LOG_FLUSH_S = float(os.environ.get("CARDS_DECISION_LOG_FLUSH_S", "0.25"))
# How often each process looks for changed cards/agreements to evict from its authorization cache.
CARDS_CACHE_POLL_S = float(os.environ.get("CARDS_CACHE_POLL_S", "0.5"))
# Service token our charge-point backend sends to POST /api/v1/authorizations (`Authorization: Bearer ...`).
CARDS_BACKEND_API_TOKEN = os.environ.get("CARDS_BACKEND_API_TOKEN", "")
CELERY_BEAT_SCHEDULE["cards-expire"] = {"task": "cards.tasks.expire_cards", "schedule": 3600.0}
# Durable outbox (roaming/outbox.py, docs/outbox.md): every push to partners (tokens, status, sessions, CDRs, tariffs).
OUTBOX_HTTP_TIMEOUT_S = float(os.environ.get("OUTBOX_HTTP_TIMEOUT_S", "10"))
# A message that failed waits this long before its next attempt, doubling, capped.
OUTBOX_BACKOFF_S = float(os.environ.get("OUTBOX_BACKOFF_S", "2"))
OUTBOX_BACKOFF_MAX_S = float(os.environ.get("OUTBOX_BACKOFF_MAX_S", "600"))
# A partner unreachable, or failing this many messages in a row, is down: one message probes it this often.
OUTBOX_DOWN_AFTER = int(os.environ.get("OUTBOX_DOWN_AFTER", "3"))
OUTBOX_PROBE_S = float(os.environ.get("OUTBOX_PROBE_S", "3"))
# Probes take the oldest message; every this-many-th probe another one (a message only it chokes on).
OUTBOX_PROBE_ROTATE = int(os.environ.get("OUTBOX_PROBE_ROTATE", "5"))
# Messages a lane reads at once, and how long it sends before letting other partners' lanes have the worker.
OUTBOX_BATCH_SIZE = int(os.environ.get("OUTBOX_BATCH_SIZE", "200"))
OUTBOX_LANE_SLICE_S = float(os.environ.get("OUTBOX_LANE_SLICE_S", "10"))
# A queued lane run is not queued again for this long (a lost one is replaced by the sweeper after it).
OUTBOX_KICK_TTL_S = int(os.environ.get("OUTBOX_KICK_TTL_S", "30"))
OUTBOX_SWEEP_S = float(os.environ.get("OUTBOX_SWEEP_S", "5"))
CELERY_BEAT_SCHEDULE["roaming-sweep-outbox"] = {"task": "roaming.sweep_outbox", "schedule": OUTBOX_SWEEP_S}
# Delivered messages are kept this long (staff see what went where), then deleted hourly; refused ones stay.
OUTBOX_KEEP_DELIVERED_DAYS = int(os.environ.get("OUTBOX_KEEP_DELIVERED_DAYS", "30"))
CELERY_BEAT_SCHEDULE["roaming-purge-outbox"] = {"task": "roaming.purge_outbox", "schedule": 3600.0}
# Location feeds (stations): page size we ask for, retries per page, the per-partner lock, full syncs.
FEEDS_PAGE_LIMIT = int(os.environ.get("FEEDS_PAGE_LIMIT", "1000"))
FEEDS_PAGE_RETRIES = int(os.environ.get("FEEDS_PAGE_RETRIES", "4"))
FEEDS_RETRY_BACKOFF_S = float(os.environ.get("FEEDS_RETRY_BACKOFF_S", "2"))
FEEDS_LOCK_TIMEOUT_S = int(os.environ.get("FEEDS_LOCK_TIMEOUT_S", "300"))
# A run's lock is taken over (and the run closed as failed, "worker died") when its owner has not stored a page
# for this long: twice the worst page (10 s HTTP timeout x 5 tries + 30 s of backoff, plus its write).
FEEDS_LOCK_STALE_S = int(os.environ.get("FEEDS_LOCK_STALE_S", "180"))
FEEDS_FULL_SYNC_HOURS = int(os.environ.get("FEEDS_FULL_SYNC_HOURS", "24"))
# PostgreSQL: store each page in a second thread while the next one is checked. Off by default: with the
# database on the same host the worker is CPU-bound and the two threads only contend for the GIL (bench/ingest).
FEEDS_WRITE_BEHIND = env_bool("FEEDS_WRITE_BEHIND", False)
# Our own Locations SENDER: the most locations one page may hold.
FEEDS_SENDER_MAX_LIMIT = int(os.environ.get("FEEDS_SENDER_MAX_LIMIT", "1000"))
CELERY_BEAT_SCHEDULE["stations-dispatch-location-pulls"] = {
    "task": "stations.tasks.dispatch_location_pulls",
    "schedule": 60.0,
}
# Driver map (stations app, issue 6).
# A station status older than this is shown as stale rather than as current.
MAP_STATUS_STALE_AFTER_MINUTES = int(os.environ.get("MAP_STATUS_STALE_AFTER_MINUTES", "30"))
# A viewport with more matching stations than this gets server-side clusters instead.
MAP_MAX_STATIONS = int(os.environ.get("MAP_MAX_STATIONS", "1000"))
# How long a map API answer may be kept; it is reused while its areas did not change (stations/map_cache.py)...
MAP_CACHE_SECONDS = int(os.environ.get("MAP_CACHE_SECONDS", "30"))
# The driver map fetches what is on screen and the open station again this often (docs/driver-app.md): with
# MAP_FRESH_SECONDS and the status inbox's lag, a status change is on a driver's open map within 5 s.
MAP_REFRESH_SECONDS = float(os.environ.get("MAP_REFRESH_SECONDS", "2"))
# Password-reset mails: printed to the console in development, SMTP (EMAIL_HOST...) in production.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("EMAIL_USE_TLS", "false").lower() == "true"
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "MobilityPlus <no-reply@mobilityplus.be>")
# ...or, whatever they did, while it is younger than this: a change is on the map within this bound.
MAP_FRESH_SECONDS = float(os.environ.get("MAP_FRESH_SECONDS", "2"))
# Areas whose versions key the cached answers: grid level (8: about 156 x 78 km in Europe), and the most
# areas an answer is keyed by (wider views are reused for MAP_FRESH_SECONDS only).
MAP_AREA_LEVEL = int(os.environ.get("MAP_AREA_LEVEL", "8"))
MAP_AREA_KEYS_MAX = int(os.environ.get("MAP_AREA_KEYS_MAX", "32"))
# How often the cluster counts (stations.MapCell) take in the changed locations (incremental update)...
MAP_CELLS_REFRESH_SECONDS = int(os.environ.get("MAP_CELLS_REFRESH_SECONDS", "10"))
# ...and how often they are rebuilt from every location at least (a safety net; also after bulk changes).
MAP_CELLS_MAX_AGE_SECONDS = int(os.environ.get("MAP_CELLS_MAX_AGE_SECONDS", "3600"))
# More changed locations than this at once (a full feed load) are counted by a rebuild, not one by one.
MAP_CELLS_INCREMENTAL_MAX = int(os.environ.get("MAP_CELLS_INCREMENTAL_MAX", "50000"))
CELERY_IMPORTS = ["stations.map_tasks", "stations.history_tasks"]
CELERY_BEAT_SCHEDULE["map-cells-refresh"] = {
    "task": "stations.map_tasks.refresh_map_cells_if_changed",
    "schedule": MAP_CELLS_REFRESH_SECONDS,
}
# The status inbox (stations/status_inbox.py, docs/scaling.md): a status-only EVSE PATCH is queued in one statement
# and applied in batches by `manage.py apply_status_inbox` (one process), PostgreSQL only. Off: applied on arrival.
STATUS_INBOX = env_bool("STATUS_INBOX", False)
STATUS_INBOX_BATCH = int(os.environ.get("STATUS_INBOX_BATCH", "2000"))
# How long the applier sleeps when the queue is empty, and how often beat drains it (should the applier stop).
STATUS_INBOX_POLL_SECONDS = float(os.environ.get("STATUS_INBOX_POLL_SECONDS", "0.2"))
STATUS_INBOX_SWEEP_SECONDS = int(os.environ.get("STATUS_INBOX_SWEEP_SECONDS", "5"))
CELERY_IMPORTS.append("stations.inbox_tasks")
CELERY_BEAT_SCHEDULE["stations-status-inbox-sweep"] = {
    "task": "stations.inbox_tasks.drain_status_inbox",
    "schedule": STATUS_INBOX_SWEEP_SECONDS,
}
# EVSE status history (stations.EvseStatusChange): partitioned by day on PostgreSQL; partitions older than the
# retention are dropped by beat, and partitions are made this many days ahead.
STATUS_HISTORY_RETENTION_DAYS = int(os.environ.get("STATUS_HISTORY_RETENTION_DAYS", "90"))
STATUS_HISTORY_DAYS_AHEAD = int(os.environ.get("STATUS_HISTORY_DAYS_AHEAD", "7"))
# What the pages reading the history (staff's EVSE page) show at most: this many days back.
STATUS_HISTORY_SHOWN_DAYS = int(os.environ.get("STATUS_HISTORY_SHOWN_DAYS", "14"))
CELERY_BEAT_SCHEDULE["stations-status-history-partitions"] = {
    "task": "stations.history_tasks.maintain_status_history",
    "schedule": 3600.0,
}

# Tariffs (tariffs app, issue 14; docs/tariffs.md).
# Our Tariffs SENDER: the most tariffs one page may hold.
TARIFFS_SENDER_MAX_LIMIT = int(os.environ.get("TARIFFS_SENDER_MAX_LIMIT", "100"))
# Pulls of partners' Tariffs SENDERs: page size we ask for, how often (0 = never by beat), a full pull every so often.
TARIFFS_PAGE_LIMIT = int(os.environ.get("TARIFFS_PAGE_LIMIT", "100"))
TARIFFS_PULL_INTERVAL_MINUTES = int(os.environ.get("TARIFFS_PULL_INTERVAL_MINUTES", "360"))
TARIFFS_FULL_PULL_HOURS = int(os.environ.get("TARIFFS_FULL_PULL_HOURS", "24"))
# A pull still "running" after this long lost its worker: the next one may start.
TARIFFS_PULL_STALE_S = int(os.environ.get("TARIFFS_PULL_STALE_S", "900"))
# The typical session drivers see priced before they start: this many kWh at the charger's power.
TARIFFS_TYPICAL_SESSION_KWH = float(os.environ.get("TARIFFS_TYPICAL_SESSION_KWH", "20"))
CELERY_BEAT_SCHEDULE["tariffs-dispatch-pulls"] = {"task": "tariffs.tasks.dispatch_tariff_pulls", "schedule": 300.0}

# Abuse limits (docs/security-throttling.md).
# Reverse proxies of ours in front of Django that append to X-Forwarded-For; 0 = the header is never read.
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))
# An address with this many failed OCPI token authentications within the window gets HTTP 429 for a window.
OCPI_AUTH_FAILURE_LIMIT = int(os.environ.get("OCPI_AUTH_FAILURE_LIMIT", "20"))
OCPI_AUTH_FAILURE_WINDOW_S = float(os.environ.get("OCPI_AUTH_FAILURE_WINDOW_S", "60"))
# The same for wrong `Authorization: Bearer` tokens on POST /api/v1/authorizations.
CARDS_BACKEND_AUTH_FAILURE_LIMIT = int(os.environ.get("CARDS_BACKEND_AUTH_FAILURE_LIMIT", "20"))
CARDS_BACKEND_AUTH_FAILURE_WINDOW_S = float(os.environ.get("CARDS_BACKEND_AUTH_FAILURE_WINDOW_S", "60"))
# Per-process cache of credentials tokens (known and unknown): at most this many entries, least recently used out.
OCPI_CONNECTION_CACHE_MAX_ENTRIES = int(os.environ.get("OCPI_CONNECTION_CACHE_MAX_ENTRIES", "10000"))
# Cards not found in the per-process card cache (cards/authorization.py): at most this many remembered.
CARDS_UNKNOWN_CACHE_MAX_ENTRIES = int(os.environ.get("CARDS_UNKNOWN_CACHE_MAX_ENTRIES", "10000"))
# Login lockout (django-axes) for drivers and staff: AXES_FAILURE_LIMIT wrong passwords for one username from
# one address lock that pair out for AXES_COOLOFF_MINUTES, even with the right password (HTTP 429 page).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = dt.timedelta(minutes=float(os.environ.get("AXES_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "mobilityplus.client_address.client_address"
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# One row per failed attempt group is enough; no row for every successful login.
AXES_DISABLE_ACCESS_LOG = True

# Our stations as a CPO (docs/cpo.md): our OCPP central system, and what the drivers' eMSPs are sent.
# Unset: commands wait for the backend, and the app offers no start at our own stations (card only).
CHARGE_POINT_BACKEND_URL = os.environ.get("CHARGE_POINT_BACKEND_URL", "")
CHARGE_POINT_BACKEND_TOKEN = os.environ.get("CHARGE_POINT_BACKEND_TOKEN", "")  # our bearer at the central system
CHARGE_POINT_BACKEND_TIMEOUT_S = float(os.environ.get("CHARGE_POINT_BACKEND_TIMEOUT_S", "5"))
CPO_SESSION_PATCH_INTERVAL_S = float(os.environ.get("CPO_SESSION_PATCH_INTERVAL_S", "60"))
CPO_CURRENCY = os.environ.get("CPO_CURRENCY", "EUR")
CELERY_BEAT_SCHEDULE["charging-flush-session-updates"] = {
    "task": "charging.flush_session_updates",
    "schedule": float(os.environ.get("CPO_SESSION_FLUSH_S", "15")),
}
