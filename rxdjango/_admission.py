"""Admitting a client: who it is, permission, then the anchors it will watch.

The checks run in the order the protocol fixes: token (400/401), then
``has_permission`` (403), then the anchor's existence (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet

from ._db_threads import in_db_thread
from ._hooks import call_hook
from ._protocol import Status
from ._registry import ChannelSpec
from ._state_model import pk_repr, wire_pk
from .auth import Authenticator, authenticate
from .exceptions import AnchorDoesNotExist, ClientError

if TYPE_CHECKING:
    from ._contract import Channel

__all__ = ["Admission", "AuthFailure", "admit", "existing_id"]


class AuthFailure(Exception):
    """The client is refused with ``status`` (400, 401, 403 or 404)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Admission:
    user: Any
    channel: Channel
    anchors: list[Any]
    last_update: float | None
    #: What the client authenticated with (its first frame's token, the authenticator
    #: that accepted it), to check again while the socket stays open.
    token: str | None
    authenticator: Authenticator


async def admit(
    spec: ChannelSpec,
    scope: dict[str, Any],
    frame: Any,
    connection: Any,
) -> Admission:
    """Check the auth frame; raises AuthFailure, or whatever a user hook raises
    (a :class:`~rxdjango.exceptions.ClientError` from a hook refuses with its status)."""
    try:
        return await _admit(spec, scope, frame, connection)
    except ClientError as refused:
        status = refused.status if refused.status in _AUTH_STATUSES else Status.FORBIDDEN
        raise AuthFailure(Status(status)) from None


_AUTH_STATUSES = (Status.BAD_REQUEST, Status.UNAUTHORIZED, Status.FORBIDDEN, Status.NOT_FOUND)


async def _admit(
    spec: ChannelSpec,
    scope: dict[str, Any],
    frame: Any,
    connection: Any,
) -> Admission:
    if not isinstance(frame, dict) or "token" not in frame:
        raise AuthFailure(Status.BAD_REQUEST)
    token = frame["token"]
    if token is not None and not isinstance(token, str):
        raise AuthFailure(Status.BAD_REQUEST)
    last_update = frame.get("lastUpdate")
    if isinstance(last_update, bool) or not isinstance(last_update, int | float):
        last_update = None
    known = await in_db_thread(authenticate, token, scope)
    if known is None:
        raise AuthFailure(Status.UNAUTHORIZED)
    user, authenticator = known
    kwargs = dict(scope.get("url_route", {}).get("kwargs", {}))
    allowed = await call_hook(spec.channel_class.has_permission, user, **kwargs)
    if allowed is not True:
        raise AuthFailure(Status.FORBIDDEN)
    channel: Channel = spec.channel_class(connection, user, kwargs)
    model = spec.state_model().anchor_model
    if spec.many:
        found = await call_hook(channel.list_instances, **kwargs)
        anchors = await in_db_thread(listed_ids, model, found)
    else:
        instance_id = await call_hook(channel.get_instance_id, **kwargs)
        existing = await in_db_thread(existing_id, model, instance_id)
        if existing is None:
            raise AnchorDoesNotExist
        anchors = existing
    return Admission(user, channel, anchors, last_update, token, authenticator)


def listed_ids(model: type[Model], found: Any) -> list[Any]:
    """Wire pks of what ``list_instances`` returned (a queryset or ids), in order."""
    if isinstance(found, QuerySet):
        return [pk_repr(pk) for pk in found.values_list("pk", flat=True)]
    return [wire_pk(model, pk) for pk in found]


def existing_id(model: type[Model], instance_id: Any) -> list[Any] | None:
    """``[wire pk]`` if a row with that pk exists, else None (invalid ids included)."""
    try:
        pk = model._meta.pk.to_python(instance_id)
    except (ValidationError, ValueError, TypeError):
        return None
    if pk is None or not model._default_manager.filter(pk=pk).exists():
        return None
    return [pk_repr(pk)]
