"""Settings of the test project: PostgreSQL by default, SQLite with RX_TEST_DB=sqlite."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "rxdjango-tests-not-secret-long-enough-for-hs256"
DEBUG = False
# The proxy test names its hosts (the Origin check and Host header behind nginx).
ALLOWED_HOSTS = os.environ.get("RX_TEST_ALLOWED_HOSTS", "*").split(",")
USE_TZ = True
# Every test creates users; the default hasher takes ~0.4 s per password by design
# (Django's advice for test settings: a fast hasher).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "rest_framework.authtoken",
    "channels",
    "rxdjango",
    "jobs",
    "shop",
    "patterns",
]

if os.environ.get("RX_TEST_DB", "postgresql") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("RX_SQLITE_NAME", str(BASE_DIR / "test.sqlite3")),
            # WAL: a load reads one snapshot while writers go on; IMMEDIATE: a writer
            # waits for another one instead of failing (docs/state.md).
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL", "transaction_mode": "IMMEDIATE"},
            # A file, not memory, so a server subprocess can share the test database.
            "TEST": {"NAME": str(BASE_DIR / f"test-run-{os.getpid()}.sqlite3")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "NAME": os.environ.get("PGDATABASE", "test"),
            # One test database per run, so two runs on one machine cannot collide.
            "TEST": {"NAME": f"test_rxdjango_{os.getpid()}"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"

if os.environ.get("RX_TEST_BACKEND") == "redis":
    # The production backend: cache and fan-out on Redis, shared by every process.
    REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/0")
    # One key prefix per test run (inherited by server subprocesses), so runs never collide.
    RX_REDIS_PREFIX = os.environ.setdefault("RX_TEST_REDIS_PREFIX", f"rx-test-{os.getpid()}")

if "RX_TEST_FRONTEND_DIR" in os.environ:
    RX_FRONTEND_DIR = os.environ["RX_TEST_FRONTEND_DIR"]

# DRF tokens, the session cookie (AuthMiddlewareStack in asgi.py) and the JWT example of
# docs/channels.md.
RX_AUTHENTICATORS = ["rxdjango.auth.drf_token", "rxdjango.auth.session", "jobs.jwt_auth.simplejwt"]

# A test stops its server subprocesses with SIGTERM and waits a few seconds for them:
# draining is kept shorter than that (tests/test_shutdown.py uses the default).
RX_SHUTDOWN_TIMEOUT = float(os.environ.get("RX_TEST_SHUTDOWN_TIMEOUT", "3"))

# Server subprocesses of the Redis tests tune these through the environment.
if "RX_TEST_REDIS_HEARTBEAT" in os.environ:
    RX_REDIS_HEARTBEAT = float(os.environ["RX_TEST_REDIS_HEARTBEAT"])
if "RX_TEST_RATE_LIMIT" in os.environ:
    RX_RATE_LIMIT = float(os.environ["RX_TEST_RATE_LIMIT"]) or None
if "RX_TEST_USER_RATE_LIMIT" in os.environ:
    RX_USER_RATE_LIMIT = float(os.environ["RX_TEST_USER_RATE_LIMIT"]) or None
if "RX_TEST_MAX_CONNECTIONS_PER_USER" in os.environ:
    RX_MAX_CONNECTIONS_PER_USER = int(os.environ["RX_TEST_MAX_CONNECTIONS_PER_USER"]) or None
if "RX_TEST_PERMISSION_RECHECK" in os.environ:
    RX_PERMISSION_RECHECK = float(os.environ["RX_TEST_PERMISSION_RECHECK"])
if "RX_TEST_FRAME_SIZE" in os.environ:
    RX_FRAME_SIZE = int(os.environ["RX_TEST_FRAME_SIZE"])
if "RX_TEST_SEND_TIMEOUT" in os.environ:
    RX_SEND_TIMEOUT = float(os.environ["RX_TEST_SEND_TIMEOUT"])
if "RX_TEST_SEND_QUEUE_LIMIT" in os.environ:
    RX_SEND_QUEUE_LIMIT = int(os.environ["RX_TEST_SEND_QUEUE_LIMIT"])
if "RX_TEST_LOAD_TIMEOUT" in os.environ:
    RX_LOAD_TIMEOUT = float(os.environ["RX_TEST_LOAD_TIMEOUT"])

if os.environ.get("RX_TEST_CHANNEL_LAYER") == "redis":
    # A channel layer shared by processes (used by the cross-process tests).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/0")],
                "prefix": os.environ.get("RX_TEST_LAYER_PREFIX", "rxdjango-tests"),
            },
        }
    }
