"""Access for as long as a socket is open: re-checks and revocations.

A connection is admitted once (who it is, ``has_permission``, anchor), but access
can end while it stays open. Three things end it:

* the user's token is deleted, or the user is deactivated or deleted: signal
  receivers here close every socket of that user, in every process, with 4401
  once that transaction commits;
* ``has_permission`` no longer holds: it is checked again before every write
  and action, and every ``RX_PERMISSION_RECHECK`` seconds on an idle socket
  (a refusal answers 403 and closes with 4403);
* the application calls ``ContextChannel.revoke(user_id, anchor_id=None)``:
  4403 on that channel's sockets of that user.

A re-check also finds what no signal announced (a user deactivated by raw SQL, a
session logged out, a JWT expired): it asks the authenticator that admitted the
connection again (:mod:`rxdjango.auth`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from ._backends import get_backend
from ._db_threads import in_db_thread
from ._hooks import call_hook
from ._protocol import CloseCode, Status
from ._state_model import pk_repr
from .auth import READ_USER_FROM_DATABASE, Authenticator
from .exceptions import ClientError

if TYPE_CHECKING:
    from ._contract import Channel

__all__ = [
    "Credential",
    "connect_revocation_signals",
    "recheck",
    "recheck_sync",
    "revoke",
]


class Credential:
    """Who a connection is, and what it proved it with (checked again on re-checks)."""

    __slots__ = ("authenticator", "scope", "token", "user_id")

    def __init__(
        self, user_id: Any, token: str | None, authenticator: Authenticator, scope: dict[str, Any]
    ) -> None:
        self.user_id = user_id
        #: The first frame's token (None: ``{"token": null}``).
        self.token = token
        self.authenticator = authenticator
        self.scope = scope


def _current_user(credential: Credential) -> Any | None:
    """The user, as its authenticator sees it now: None if its token or session is gone,
    or it is another user, inactive, or deleted."""
    user = credential.authenticator(credential.token, credential.scope)
    if user is None or pk_repr(user.pk) != credential.user_id:
        return None
    if credential.authenticator not in READ_USER_FROM_DATABASE:
        # read again: an authenticator may answer from its own data (a JWT's claims)
        user = get_user_model()._default_manager.filter(pk=user.pk).first()
    return user if user is not None and user.is_active else None


def recheck_sync(channel: Channel, credential: Credential) -> Status | None:
    """None if the connection may still act, else the status that refuses it
    (synchronous ORM code; ``has_permission`` may be a coroutine function)."""
    user = _current_user(credential)
    if user is None:
        return Status.UNAUTHORIZED
    hook = channel.has_permission
    try:
        if inspect.iscoroutinefunction(hook):
            allowed = async_to_sync(hook)(user, **channel.kwargs)
        else:
            allowed = hook(user, **channel.kwargs)
    except ClientError as refused:
        return _refusal_status(refused)
    return None if allowed is True else Status.FORBIDDEN


async def recheck(channel: Channel, credential: Credential) -> Status | None:
    """As :func:`recheck_sync`, from the event loop."""
    user = await in_db_thread(_current_user, credential)
    if user is None:
        return Status.UNAUTHORIZED
    try:
        allowed = await call_hook(channel.has_permission, user, **channel.kwargs)
    except ClientError as refused:
        return _refusal_status(refused)
    return None if allowed is True else Status.FORBIDDEN


def _refusal_status(refused: ClientError) -> Status:
    """What ``has_permission`` raising a client error means, as at admission: its status
    if it is 401, 403 or 404 (an anchor deleted while the socket was open), else 403."""
    if refused.status in (Status.UNAUTHORIZED, Status.FORBIDDEN, Status.NOT_FOUND):
        return Status(refused.status)
    return Status.FORBIDDEN


def revoke(
    user_id: Any,
    code: CloseCode,
    channel_id: str | None = None,
    anchor: Any = None,
    using: str | None = None,
) -> None:
    """Close the user's sockets (of one channel, of one anchor) in every process, once
    the current transaction on ``using`` commits (at once outside a transaction, and
    from async code, which never runs inside one)."""

    def close() -> None:
        get_backend().revoke(pk_repr(user_id), int(code), channel_id, anchor)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        transaction.on_commit(close, using=using)
    else:
        close()  # the backend does not block an event loop


# -- signals ------------------------------------------------------------------------------


def _on_token_deleted(sender: type, instance: Any, using: str, **kwargs: Any) -> None:
    revoke(instance.user_id, CloseCode.UNAUTHORIZED, using=using)


def _on_user_saved(sender: type, instance: Any, using: str, **kwargs: Any) -> None:
    if kwargs.get("raw") or getattr(instance, "is_active", True):
        return
    revoke(instance.pk, CloseCode.UNAUTHORIZED, using=using)


def _on_user_deleted(sender: type, instance: Any, using: str, **kwargs: Any) -> None:
    revoke(instance.pk, CloseCode.UNAUTHORIZED, using=using)


def connect_revocation_signals() -> None:
    """Watch the token and user tables (called once, when the app is ready)."""
    user_model = get_user_model()
    receivers: list[tuple[Any, Callable[..., None], type, str]] = [
        (post_save, _on_user_saved, user_model, "rxdjango.revoke.user_saved"),
        (post_delete, _on_user_deleted, user_model, "rxdjango.revoke.user_deleted"),
    ]
    from django.apps import apps

    if apps.is_installed("rest_framework.authtoken"):
        from rest_framework.authtoken.models import Token

        receivers.append((post_delete, _on_token_deleted, Token, "rxdjango.revoke.token"))
    for signal, receiver, sender, uid in receivers:
        signal.connect(receiver, sender=sender, dispatch_uid=uid, weak=False)
