"""The benchmark project: the test project's Job/Task tree, served with RxDjango, DCRF,
a DRF REST endpoint and a raw-WebSocket floor side by side (one ASGI application)."""

import os

os.environ.setdefault("RX_TEST_DB", "sqlite")

from testproject.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "djangochannelsrestframework"]  # noqa: F405
ROOT_URLCONF = "benchproject.urls"
ASGI_APPLICATION = "benchproject.asgi.application"
if os.environ.get("BENCH_DB"):
    DATABASES["default"]["NAME"] = os.environ["BENCH_DB"]  # noqa: F405
REST_FRAMEWORK = {"DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"]}
LOGGING = {"version": 1, "disable_existing_loggers": False}
# DCRF's observers need a channel layer (RxDjango's own fan-out does not use one).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
