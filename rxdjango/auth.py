"""Who a client is: the authenticators its first frame is checked with.

An authenticator is a callable ``(token, scope) -> user | None``. ``token`` is what the
client's first frame holds under ``"token"`` (a string, or None for ``{"token": null}``);
``scope`` is the connection's ASGI scope. It runs in a worker thread (ORM code is fine)
when the client connects and again at every re-check of the connection (before each
write and action, and every ``RX_PERMISSION_RECHECK`` seconds), so access ends when what
it checked stops holding: a token deleted, a session logged out, a JWT expired.

``RX_AUTHENTICATORS`` lists them (dotted paths or callables), tried in order; the first
that returns an active user admits the client. The default accepts DRF tokens and the
session of a scope that Channels' ``AuthMiddlewareStack`` filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any, cast

from django.apps import apps
from django.conf import settings
from django.http import HttpRequest
from django.utils.module_loading import import_string

from .conf import rx_settings

__all__ = ["Authenticator", "drf_token", "session"]

Authenticator = Callable[[str | None, dict[str, Any]], Any]


def drf_token(token: str | None, scope: dict[str, Any]) -> Any | None:
    """The active user owning the DRF token ``token`` (``rest_framework.authtoken``)."""
    if token is None or not apps.is_installed("rest_framework.authtoken"):
        return None
    from rest_framework.authtoken.models import Token

    # No key holds a NUL byte (PostgreSQL refuses to even compare one) or is longer
    # than the column: such a key is unknown, without asking the database.
    max_length = cast(int, Token._meta.get_field("key").max_length)  # a CharField's: always set
    if "\x00" in token or len(token) > max_length:
        return None
    found = list(Token.objects.select_related("user").filter(key=token)[:1])
    return found[0].user if found else None


#: Authenticators that return the user row they have just read from the database: a
#: re-check need not read it again (others may answer from their own data, a JWT's).
READ_USER_FROM_DATABASE: frozenset[Authenticator] = frozenset({drf_token})


def session(token: str | None, scope: dict[str, Any]) -> Any | None:
    """The user logged in to the session of the connection's cookie, read afresh from the
    session store (``{"token": null}`` under Channels' ``AuthMiddlewareStack``): a logout
    or a password change ends the access as it ends the session."""
    if token is not None or scope.get("session") is None:
        return None
    from django.contrib.auth import get_user

    key = scope["session"].session_key
    if key is None:
        return None
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    user = get_user(request)
    return user if user.is_authenticated else None


def authenticate(token: str | None, scope: dict[str, Any]) -> tuple[Any, Authenticator] | None:
    """The active user the first authenticator that knows ``token`` returns, and that
    authenticator (to check again later); None if none does."""
    for authenticator in configured():
        user = authenticator(token, scope)
        if user is not None:
            return (user, authenticator) if getattr(user, "is_active", True) else None
    return None


def configured() -> list[Authenticator]:
    """``RX_AUTHENTICATORS``, dotted paths imported."""
    return [
        import_string(entry) if isinstance(entry, str) else entry
        for entry in rx_settings.RX_AUTHENTICATORS
    ]
