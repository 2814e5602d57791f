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
        from . import _access, _changes
        from .channels import ContextChannel

        discover_channels()
        for channel in ContextChannel.get_registered_channels():
            channel.state_model()
        _changes.connect_signals()
        _access.connect_revocation_signals()
        checks.register(check_settings, "rxdjango")
        checks.register(check_channels, "rxdjango")


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


def check_channels(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    from .channels import ContextChannel

    warnings: list[checks.CheckMessage] = []
    for channel in sorted(ContextChannel.get_registered_channels(), key=lambda c: c.channel_id):
        if channel.has_permission is ContextChannel.has_permission:
            warnings.append(
                checks.Warning(
                    f"{channel.channel_id} does not define has_permission: every "
                    "authenticated user may open it, for any anchor.",
                    hint="Declare @staticmethod has_permission(user, **route_kwargs) "
                    "returning True only for users who may see the anchor.",
                    obj=channel,
                    id="rxdjango.W002",
                )
            )
    return warnings
