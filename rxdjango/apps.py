"""App configuration: discover channels and connect the change signals."""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING

from django.apps import AppConfig, apps
from django.core import checks
from django.db import connections
from django.db.models.signals import post_migrate
from django.utils.module_loading import import_string, module_has_submodule

from .auth import drf_token
from .conf import rx_settings

if TYPE_CHECKING:
    from ._state_model import StateModel

__all__ = ["RxDjangoConfig"]


class RxDjangoConfig(AppConfig):
    name = "rxdjango"
    verbose_name = "RxDjango"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the app registry is ready: they import models and serializers.
        from . import _access, _signal_source
        from .channels import ContextChannel

        discover_channels()
        for channel in ContextChannel.get_registered_channels():
            channel.state_model()
        _signal_source.connect_signals()
        _access.connect_revocation_signals()
        post_migrate.connect(install_capture, sender=self, dispatch_uid="rxdjango.capture")
        checks.register(check_settings, "rxdjango")
        checks.register(check_channels, "rxdjango")
        checks.register(check_capture, "rxdjango", deploy=False)


def install_capture(using: str = "default", **kwargs: object) -> None:
    """After ``migrate``: (re)install the triggers that capture changes in ``using``."""
    from . import _capture

    connection = connections[using]
    if rx_settings.RX_CAPTURE and _capture.supports_capture(connection):
        _capture.install_triggers(connection, _capture.watched_tables())


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
    errors = _authenticator_errors()
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


def _authenticator_errors() -> list[checks.CheckMessage]:
    """Each ``RX_AUTHENTICATORS`` entry imports and is callable; DRF tokens need their app."""
    errors: list[checks.CheckMessage] = []
    entries = rx_settings.RX_AUTHENTICATORS
    for entry in entries:
        try:
            found = import_string(entry) if isinstance(entry, str) else entry
        except ImportError as error:
            found, reason = None, str(error)
        else:
            reason = f"{found!r} is not callable"
        if not callable(found):
            errors.append(
                checks.Error(
                    f"RX_AUTHENTICATORS entry {entry!r} is not an authenticator: {reason}.",
                    hint="List callables (token, scope) -> user or None, or their dotted paths.",
                    id="rxdjango.E003",
                )
            )
    uses_tokens = "rxdjango.auth.drf_token" in entries or drf_token in entries
    if uses_tokens and not apps.is_installed("rest_framework.authtoken"):
        errors.append(
            checks.Error(
                "RX_AUTHENTICATORS authenticates clients with DRF tokens.",
                hint="Add 'rest_framework.authtoken' to INSTALLED_APPS, or remove "
                "'rxdjango.auth.drf_token' from RX_AUTHENTICATORS.",
                id="rxdjango.E001",
            )
        )
    return errors


def check_capture(
    app_configs: object = None, databases: object = None, **kwargs: object
) -> list[checks.CheckMessage]:
    """Say which write paths reach clients on a database that cannot capture changes."""
    from . import _capture

    warnings: list[checks.CheckMessage] = []
    if not rx_settings.RX_CAPTURE:
        return warnings
    for alias in connections:
        connection = connections[alias]
        if not _capture.supports_capture(connection):
            warnings.append(
                checks.Warning(
                    f"Database {alias!r} ({connection.vendor}) cannot capture changes: only "
                    "save(), delete() and many-to-many changes made in a process that "
                    "serves clients (or that shares the Redis backend) reach clients. "
                    "QuerySet.update(), bulk_create(), bulk_update(), raw SQL and other "
                    "programs' writes do not, unless the application calls "
                    "broadcast_instance() or clear_cache().",
                    hint="Use SQLite or PostgreSQL to capture every committed change.",
                    id="rxdjango.W003",
                )
            )
    return warnings


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
        warnings.extend(_undeclared_reads(channel.channel_id, channel.state_model()))
    return warnings


def _undeclared_reads(channel_id: str, state_model: StateModel) -> list[checks.CheckMessage]:
    """Method fields whose source reads rows outside their record's subtree without
    ``@depends_on``: a change to those rows would not refresh them."""
    from rest_framework.serializers import SerializerMethodField

    from ._fields import method_of, reads_outside

    warnings: list[checks.CheckMessage] = []
    for layer in state_model.layers.values():
        followed = {edge.parent_lookup for edge in layer.edges if edge.parent_lookup}
        for name, serializer_field in layer.flat_serializer.fields.items():
            if not isinstance(serializer_field, SerializerMethodField):
                continue
            method = method_of(layer.serializer_class, serializer_field)
            if method is None or hasattr(method, "rx_depends_on"):
                continue
            reads = reads_outside(layer.model, method, followed)
            if reads:
                warnings.append(
                    checks.Warning(
                        f"{channel_id}: {layer.serializer_class.__name__}.{name} reads "
                        f"{', '.join(reads)} outside its record's subtree; changes there do "
                        "not refresh it.",
                        hint="Declare what it reads with @rxdjango.decorators.depends_on"
                        "('<model path>', ...) on the method.",
                        obj=layer.serializer_class,
                        id="rxdjango.W004",
                    )
                )
    return warnings
