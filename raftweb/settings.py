"""RAFTweb settings: everything comes from the environment (see .env.example).

The defaults are the embedded stack (SQLite, SqliteHuey, in-memory channels, Chroma on
disk) so `make run` works with nothing installed; DATABASE_URL, REDIS_URL and CHROMA_URL
switch to the production stack. Every helper fails loudly on a bad value: a typo in an
env var should stop start-up with a message naming it, not run with a silent default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# A .env file beside manage.py is read for convenience; real environment variables win.
if (BASE_DIR / ".env").is_file() and not os.environ.get("RAFTWEB_IGNORE_DOTENV"):
    from dotenv import load_dotenv

    load_dotenv(BASE_DIR / ".env", override=False)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean (use one of 1/0, true/false, yes/no)."
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, schemes: tuple[str, ...]) -> str:
    value = env_str(name)
    if value and not value.startswith(tuple(f"{s}://" for s in schemes)):
        raise ImproperlyConfigured(
            f"{name}={value!r} must start with one of: {', '.join(schemes)}://"
        )
    return value


DEBUG = env_bool("RAFTWEB_DEBUG", False)
DATA_DIR = Path(env_str("RAFTWEB_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """An explicit key wins; otherwise one is generated once and kept in the data dir, so
    sessions survive restarts without anyone having to invent a secret for a local install."""
    key = env_str("RAFTWEB_SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        from django.utils.crypto import get_random_string

        path.write_text(get_random_string(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("RAFTWEB_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("RAFTWEB_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",  # serves the API docs' Swagger UI from our static files, not from a CDN
    "channels",
    "huey.contrib.djhuey",
    "raftweb.core",
    "corpus",
    "training",
    "evaluation",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "raftweb.core.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "raftweb.core.audit.AuditActorMiddleware",  # who did it, for the audit log
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "raftweb.core.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "raftweb.urls"
ASGI_APPLICATION = "raftweb.asgi.application"

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
                "raftweb.core.context_processors.navigation",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
if DATABASE_URL:
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "raftweb.sqlite3",
            # Connections are kept, as with DATABASE_URL: Channels and the search pool close
            # "old" connections around each call, and with 0 every chat turn opened new ones
            # (py-spy: ~19% of the ORM work under 200 chat clients was connecting).
            "CONN_MAX_AGE": 60,
            # WAL lets the web process read while the worker writes.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- background jobs and channel layer ----------------------------------------------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix"))
HUEY_IMMEDIATE = env_bool("RAFTWEB_HUEY_IMMEDIATE", False)
if REDIS_URL:
    HUEY = {
        "huey_class": "huey.RedisHuey",
        "name": env_str("RAFTWEB_HUEY_NAME", "raftweb"),
        "url": REDIS_URL,
        "immediate": HUEY_IMMEDIATE,
        "consumer": {"workers": env_int("RAFTWEB_WORKERS", 2, minimum=1), "worker_type": "thread"},
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    HUEY = {
        "huey_class": "huey.SqliteHuey",
        "name": "raftweb",
        "filename": str(DATA_DIR / "huey.sqlite3"),
        "immediate": HUEY_IMMEDIATE,
        "consumer": {"workers": env_int("RAFTWEB_WORKERS", 2, minimum=1), "worker_type": "thread"},
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds login-failure counters and API rate limits (raftweb/core/throttle.py) and
# the cached health probes: on Redis, several web processes share them.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("RAFTWEB_HUEY_NAME", "raftweb"),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            # Room for many counters: culling would forget failures an attacker caused.
            "OPTIONS": {"MAX_ENTRIES": 50_000},
        }
    }

# --- vector store, files, limits -------------------------------------------------------
CHROMA_URL = env_url("CHROMA_URL", ("http", "https"))
CHROMA_PATH = DATA_DIR / "chroma"
# Concurrent searches (chat, API, evaluation) embed their queries together: the query batcher
# encodes at most EMBED_BATCH_SIZE at once and, when a second query is already waiting, may
# gather for EMBED_BATCH_WAIT_MS more (0: none; measured, see raftweb/retrieval/embedder.py).
# A lone query never waits. Chat reads a KB's search set-up in a pool of SEARCH_THREADS threads;
# its searches' index lookups run batched in one thread (raftweb/retrieval/retriever.py).
EMBED_BATCH_SIZE = env_int("RAFTWEB_EMBED_BATCH_SIZE", 32, minimum=1)
EMBED_BATCH_WAIT_MS = env_float("RAFTWEB_EMBED_BATCH_WAIT_MS", 0.0, minimum=0.0)
EMBED_THREADS = env_int("RAFTWEB_EMBED_THREADS", 1, minimum=1)  # torch threads per query batch
# Encode queries in a child process: its forward pass then never waits for this process's GIL
# behind busy request and event-loop threads (raftweb/retrieval/query_process.py). "auto" (the
# default): on in the web process (raftweb/asgi.py), where chat and search crowd the GIL; off
# in workers and commands, which encode in batches of their own.
EMBED_PROCESS: bool | None = (
    None
    if os.environ.get("RAFTWEB_EMBED_PROCESS", "auto").strip().lower() in ("", "auto")
    else env_bool("RAFTWEB_EMBED_PROCESS")
)
SEARCH_THREADS = env_int("RAFTWEB_SEARCH_THREADS", 8, minimum=1)
SEARCH_SLOTS = env_int("RAFTWEB_SEARCH_SLOTS", 16, minimum=1)  # searches at once per process
# How long a web process reuses a knowledge base's chat set-up (generator, embedding version and
# profiles) before reading it again (raftweb/core/memo.py). Changes saved in the same process
# apply at once; other processes (the worker, more web processes) see them within this time.
CONFIG_TTL_S = env_float("RAFTWEB_CONFIG_TTL_S", 5.0, minimum=0.0)
# HTTP requests computed at once per web process; the rest wait on the event loop, holding no
# thread (raftweb/core/admission.py). 0: no limit.
HTTP_CONCURRENCY = env_int("RAFTWEB_HTTP_CONCURRENCY", 16, minimum=0)
ARTIFACTS_DIR = DATA_DIR / "artifacts"
MEDIA_ROOT = DATA_DIR / "uploads"
MEDIA_URL = "/media/"
MAX_UPLOAD_BYTES = env_int("RAFTWEB_MAX_UPLOAD_MB", 50, minimum=1) * 1024 * 1024
# Django's own in-memory cap must not be what rejects big files: uploads stream to disk.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("RAFTWEB_MAX_FILES_PER_UPLOAD", 200, minimum=1)

# --- auth -------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "core:home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("RAFTWEB_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- brute force, rate limits, request size (raftweb/core/throttle.py) ----------------------
# Wrong passwords per account, and per client address, before a lockout; bad API tokens per
# client address. A lockout lasts AUTH_LOCKOUT_S and doubles with each repeat (up to a day).
LOGIN_FAILURE_LIMIT = env_int("RAFTWEB_LOGIN_FAILURE_LIMIT", 5, minimum=0)
LOGIN_ADDRESS_FAILURE_LIMIT = env_int("RAFTWEB_LOGIN_ADDRESS_FAILURE_LIMIT", 20, minimum=0)
TOKEN_FAILURE_LIMIT = env_int("RAFTWEB_TOKEN_FAILURE_LIMIT", 20, minimum=0)
AUTH_LOCKOUT_S = env_int("RAFTWEB_LOCKOUT_SECONDS", 900, minimum=1)
# Reverse proxies in front that append the client to X-Forwarded-For (0: use the peer address).
TRUSTED_PROXIES = env_int("RAFTWEB_TRUSTED_PROXIES", 0, minimum=0)


def _env_rate(name: str, default: str) -> str:
    from raftweb.core.rates import parse_rate  # pure Python: safe to import from settings

    value = env_str(name, default)
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None
    return value


# Per user (all their tokens and their session together); "off" disables a limit.
RATE_LIMITS = {
    "search": _env_rate("RAFTWEB_RATE_SEARCH", "120/min"),  # KB search API
    "chat": _env_rate("RAFTWEB_RATE_CHAT", "30/min"),  # chat questions + /api/v1/chat/completions
}
MAX_QUERY_CHARS = env_int("RAFTWEB_MAX_QUERY_CHARS", 2000, minimum=1)  # a search query
MAX_QUESTION_CHARS = env_int("RAFTWEB_MAX_QUESTION_CHARS", 4000, minimum=1)  # a chat question
# /api/health runs its probes (model servers, vector store) at most this often.
HEALTH_CACHE_S = env_int("RAFTWEB_HEALTH_CACHE_SECONDS", 5, minimum=0)
# The web process loads the embedding model in the background as it starts (raftweb/core/
# warmup.py), so the first search does not wait seconds for it; /api/health says when it is ready.
EMBEDDING_WARMUP = env_bool("RAFTWEB_EMBEDDING_WARMUP", True)

# --- HTTPS and browser security headers -----------------------------------------------------
# Behind HTTPS (RAFTWEB_SECURE_COOKIES=true) the browser is told to stay on HTTPS (HSTS) and
# plain-HTTP requests are redirected; /health stays reachable over HTTP for load balancers.
SECURE_SSL_REDIRECT = env_bool("RAFTWEB_SSL_REDIRECT", SESSION_COOKIE_SECURE)
SECURE_REDIRECT_EXEMPT = [r"^health$"]
SECURE_HSTS_SECONDS = env_int(
    "RAFTWEB_HSTS_SECONDS", 31_536_000 if SESSION_COOKIE_SECURE else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("RAFTWEB_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("RAFTWEB_HSTS_PRELOAD", False)
# Preloading is a commitment only the site's owner can make (W021 would ask for it).
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# A TLS-terminating proxy says the request came over HTTPS with this header, e.g.
# RAFTWEB_PROXY_SSL_HEADER=X-Forwarded-Proto (value "https"). Only set it behind such a proxy:
# otherwise any client could claim HTTPS.
_proxy_ssl_header = env_str("RAFTWEB_PROXY_SSL_HEADER")
if _proxy_ssl_header:
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
        raise ImproperlyConfigured(
            f"RAFTWEB_PROXY_SSL_HEADER={_proxy_ssl_header!r} is not a header name "
            "(e.g. X-Forwarded-Proto)."
        )
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _proxy_ssl_header.upper().replace("-", "_"),
        "https",
    )
# Content-Security-Policy, in the shape of Django 6.0's SECURE_CSP (sent by
# raftweb.core.middleware.ContentSecurityPolicyMiddleware): every script and style is a
# same-origin static file; no inline code, no other origin.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'", "ws:", "wss:"],  # the chat WebSocket
    "object-src": ["'none'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
}

# --- static -------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("RAFTWEB_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- models ------------------------------------------------------------------------------
# Model profiles live in the database (editable in the UI); these env vars only seed them.
# See raftweb/llm/catalog.py for RAFTWEB_<ROLE>_BACKEND/_MODEL/_BASE_URL/_API_KEY/_ADAPTER.
HF_HUB_OFFLINE = env_bool("HF_HUB_OFFLINE", False)
WORKER_HEARTBEAT_STALE_S = env_int("RAFTWEB_WORKER_STALE_SECONDS", 90, minimum=10)
# A document left parsing/embedding this long without progress (its worker was killed) is
# resumed by any worker, and Retry accepts it. Keep it above the longest silent step: one
# parse (up to 120 s) or one embedding round.
INGEST_STALE_S = env_int("RAFTWEB_INGEST_STALE_SECONDS", 300, minimum=1)

# --- fine-tuning ----------------------------------------------------------------------------
# A run is prepared in TRAIN_RUNS_DIR/<id>/ and trained by a subprocess of the worker:
# `python -m TRAIN_MODULE --run-dir DIR`, or `accelerate launch [ARGS] -m TRAIN_MODULE ...`
# (see raftweb/train/__init__.py for the run-directory contract).
TRAIN_RUNS_DIR = DATA_DIR / "runs"
TRAIN_MODULE = env_str("RAFTWEB_TRAIN_MODULE", "raftweb.train.run")
if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", TRAIN_MODULE):
    raise ImproperlyConfigured(
        f"RAFTWEB_TRAIN_MODULE={TRAIN_MODULE!r} is not a dotted Python module name."
    )
TRAIN_LAUNCHER = env_str("RAFTWEB_TRAIN_LAUNCHER", "python").lower()
if TRAIN_LAUNCHER not in ("python", "accelerate"):
    raise ImproperlyConfigured(
        f"RAFTWEB_TRAIN_LAUNCHER={TRAIN_LAUNCHER!r} must be 'python' or 'accelerate'."
    )
# Extra `accelerate launch` flags, e.g. "--num_processes 4 --mixed_precision bf16".
TRAIN_ACCELERATE_ARGS = env_str("RAFTWEB_TRAIN_ACCELERATE_ARGS")
# How often the worker reads metrics.jsonl and reports a heartbeat.
TRAIN_POLL_S = env_float("RAFTWEB_TRAIN_POLL_SECONDS", 2.0, minimum=0.01)
# A running run whose worker has been silent this long is taken over (its process resumed).
TRAIN_STALE_S = env_int("RAFTWEB_TRAIN_STALE_SECONDS", 120, minimum=10)
# After a cancel, how long the script may take to stop on its own before it is terminated.
TRAIN_CANCEL_GRACE_S = env_int("RAFTWEB_TRAIN_CANCEL_GRACE_SECONDS", 300, minimum=1)
# The student is a vLLM server with runtime LoRA updating: activating an adapter loads it there.
RAFTWEB_VLLM_RUNTIME_LORA = env_bool("RAFTWEB_VLLM_RUNTIME_LORA", False)

# Evaluation runs (evaluation/): answers are capped at EVAL_MAX_TOKENS new tokens (chains of
# thought need room); a run whose worker was silent for EVAL_STALE_S is resumed by another;
# the promotion gate compares these metrics (a drop larger than EVAL_GATE_TOLERANCE regresses).
EVAL_MAX_TOKENS = env_int("RAFTWEB_EVAL_MAX_TOKENS", 800, minimum=1)
EVAL_STALE_S = env_int("RAFTWEB_EVAL_STALE_SECONDS", 600, minimum=10)
EVAL_GATE_METRICS = env_list(
    "RAFTWEB_EVAL_GATE_METRICS", ["parse_success", "correct_reference", "judge_soft", "recall@k"]
)
EVAL_GATE_TOLERANCE = env_float("RAFTWEB_EVAL_GATE_TOLERANCE", 0.0, minimum=0.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("RAFTWEB_LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
