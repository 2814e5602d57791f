"""Settings of the example. Embedded defaults (SQLite, in-memory cache); set
EXAMPLE_DATABASE_URL-style variables below for the Redis + PostgreSQL variant."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "rxdjango-example-not-secret")
DEBUG = os.environ.get("EXAMPLE_DEBUG", "1") == "1"
# `make demo DEMO_HOST=...` adds the host it serves on (0.0.0.0: any host).
_demo_host = os.environ.get("EXAMPLE_ALLOWED_HOSTS", "")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"] + (
    ["*"] if _demo_host == "0.0.0.0" else [_demo_host] if _demo_host else []
)
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "channels",
    "rxdjango",
    "board",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "exampleproject.urls"
ASGI_APPLICATION = "exampleproject.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if os.environ.get("EXAMPLE_POSTGRES_DB"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "NAME": os.environ["EXAMPLE_POSTGRES_DB"],
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("EXAMPLE_SQLITE", str(BASE_DIR / "example.sqlite3")),
            # WAL: loading a board never makes a writer wait; IMMEDIATE: a writer
            # waits for another one instead of failing (docs/state.md).
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL", "transaction_mode": "IMMEDIATE"},
        }
    }

# Channels' layer carries the presence events (group_add / @consumer).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The production variant: set REDIS_URL (and run several server processes).
if os.environ.get("REDIS_URL"):
    REDIS_URL = os.environ["REDIS_URL"]
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
FRONTEND_DIST = BASE_DIR / "frontend" / "dist"
RX_FRONTEND_DIR = BASE_DIR / "frontend" / "src" / "rx"
