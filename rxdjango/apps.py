"""App configuration: discover channels and connect the change signals."""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from django.apps import AppConfig, apps
from django.core import checks
from django.utils.module_loading import module_has_submodule

from .conf import rx_settings

__all__ = ["RxDjangoConfig"]


class RxDjangoConfig(AppConfig):
    name = "rxdjango"
    verbose_name = "RxDjango"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import _changes
        from .channels import ContextChannel

        discover_channels()
        for channel in ContextChannel.get_registered_channels():
            channel.state_model()
        _changes.connect_signals()
        checks.register(check_settings, "rxdjango")


def discover_channels() -> None:
    """Import ``<app>.channels`` for every installed app that has one.

    Only a missing ``channels`` module is skipped; an ImportError raised inside
    one propagates with its real cause.
    """
    for app_config in apps.get_app_configs():
        if app_config.name == "rxdjango":
            continue
        if module_has_submodule(app_config.module, "channels"):
            import_module(f"{app_config.name}.channels")


def check_settings(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if not apps.is_installed("rest_framework.authtoken"):
        errors.append(
            checks.Error(
                "RxDjango authenticates clients with DRF tokens.",
                hint="Add 'rest_framework.authtoken' to INSTALLED_APPS.",
                id="rxdjango.E001",
            )
        )
    wants_redis = rx_settings.REDIS_URL or rx_settings.RX_REDIS_CLIENT
    if wants_redis and find_spec("redis") is None:
        errors.append(
            checks.Error(
                "REDIS_URL or RX_REDIS_CLIENT is set, but the redis package is not installed.",
                hint="pip install 'rxdjango[redis]'",
                id="rxdjango.E002",
            )
        )
    return errors
