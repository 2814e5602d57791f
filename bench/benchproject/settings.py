"""The benchmark project: the test project's Job/Task tree, served with RxDjango, DCRF,
a DRF REST endpoint and a raw-WebSocket floor side by side (one ASGI application).

``BENCH_MODE=single`` (default): SQLite file ``BENCH_DB``, embedded RxDjango backend,
in-memory channel layer, one server process. ``BENCH_MODE=multi``: PostgreSQL database
``PGDATABASE``, RxDjango on Redis and DCRF on a Redis channel layer, so several server
processes serve the same clients.
"""

import os

MULTI = os.environ.get("BENCH_MODE") == "multi"
os.environ.setdefault("RX_TEST_DB", "postgresql" if MULTI else "sqlite")
if MULTI:
    os.environ.setdefault("RX_TEST_BACKEND", "redis")

from testproject.settings import *  # noqa: E402, F403

INSTALLED_APPS = [*INSTALLED_APPS, "djangochannelsrestframework"]  # noqa: F405
ROOT_URLCONF = "benchproject.urls"
ASGI_APPLICATION = "benchproject.asgi.application"
if os.environ.get("BENCH_DB"):
    DATABASES["default"]["NAME"] = os.environ["BENCH_DB"]  # noqa: F405
REST_FRAMEWORK = {"DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"]}
# One benchmark user opens every connection (1,000 and more): no per-user cap here.
RX_MAX_CONNECTIONS_PER_USER = None
# Every bench client is the same user; the per-user limit would make the writes
# scenario measure that policy (100 frames/s per user) instead of the server.
RX_USER_RATE_LIMIT = None
LOGGING = {"version": 1, "disable_existing_loggers": False}
# DCRF's observers need a channel layer (RxDjango's own fan-out does not use one).
if MULTI:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],  # noqa: F405
                "prefix": f"{RX_REDIS_PREFIX}-dcrf",  # noqa: F405
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
