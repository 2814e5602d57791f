"""The WebSocket consumer behind ``ContextChannel.as_asgi()``.

It only moves messages: frames in are decoded and dispatched by lifecycle
state; everything out goes through one outbox drained by one writer task, so
the client sees auth reply, anchors, initial state, end marker and live
records in exactly the order they were queued.

Lifecycle: AWAITING_AUTH → STARTING → LIVE, and CLOSING / CLOSED from anywhere.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet

from . import _codec
from ._auth import user_for_token
from ._backend import get_backend
from ._cache import AnchorRef
from ._hooks import call_hook
from ._layers import get_layer
from ._protocol import CloseCode, Operation, Reply, Status, auth_reply, end_marker, error_frame
from ._state_model import pk_repr
from .conf import rx_settings

if TYPE_CHECKING:
    from .channels import ContextChannel

__all__ = ["ChannelConsumer", "Lifecycle"]

logger = logging.getLogger("rxdjango")


class Lifecycle(StrEnum):
    AWAITING_AUTH = "awaiting_auth"
    STARTING = "starting"
    LIVE = "live"
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED: dict[Lifecycle, set[Lifecycle]] = {
    Lifecycle.AWAITING_AUTH: {Lifecycle.STARTING, Lifecycle.CLOSING, Lifecycle.CLOSED},
    Lifecycle.STARTING: {Lifecycle.LIVE, Lifecycle.CLOSING, Lifecycle.CLOSED},
    Lifecycle.LIVE: {Lifecycle.CLOSING, Lifecycle.CLOSED},
    Lifecycle.CLOSING: {Lifecycle.CLOSED},
    Lifecycle.CLOSED: set(),
}


@dataclass(frozen=True)
class _Close:
    code: int


class _AuthFailure(Exception):
    def __init__(self, status: Status) -> None:
        self.status = status


class ChannelConsumer(AsyncWebsocketConsumer):
    """One client connection to one ``ContextChannel`` class."""

    def __init__(self, channel_class: type[ContextChannel]) -> None:
        super().__init__()
        self.channel_class = channel_class
        self.lifecycle = Lifecycle.AWAITING_AUTH
        self.channel: ContextChannel | None = None
        self.user: Any = None
        self.user_id: Any = None
        self.loop: asyncio.AbstractEventLoop
        self._outbox: asyncio.Queue[str | _Close] = asyncio.Queue()
        self._held: dict[Any, list[str]] = {}
        self._subscriptions: list[AnchorRef] = []
        self._groups: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- ASGI plumbing ----------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """As Channels' consumer, but with the embedded layer when none is configured."""
        self.scope = scope
        self.channel_layer = get_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        try:
            await await_many_dispatch([receive, self.channel_receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            await self._cleanup()

    def _move(self, target: Lifecycle) -> None:
        if target not in _ALLOWED[self.lifecycle]:
            raise RuntimeError(f"connection cannot go from {self.lifecycle} to {target}")
        self.lifecycle = target

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def connect(self) -> None:
        await self.accept()
        self.loop = asyncio.get_running_loop()
        self._spawn(self._write_loop())
        self._auth_timer = self._spawn(self._auth_timeout())

    async def disconnect(self, code: int) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self.lifecycle is Lifecycle.CLOSED:
            return
        self.lifecycle = Lifecycle.CLOSED
        backend = get_backend()
        for ref in self._subscriptions:
            backend.unsubscribe(ref, self)
        self._subscriptions.clear()
        for task in list(self._tasks):
            task.cancel()
        for group in self._groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        self._groups.clear()
        if self.channel is not None:
            try:
                await call_hook(self.channel.on_disconnect)
            except Exception:
                logger.exception("rxdjango: on_disconnect of %s raised", self.channel_class)

    # -- outgoing -----------------------------------------------------------------------

    def send_frame(self, data: Any) -> None:
        """Queue a JSON value (or ready JSON text) for this client, in order."""
        if self.lifecycle is Lifecycle.CLOSED:
            return
        self._outbox.put_nowait(data if isinstance(data, str) else _codec.encode(data))

    def _close_after_queued(self, code: int) -> None:
        self._outbox.put_nowait(_Close(code))

    async def _write_loop(self) -> None:
        """The only sender on this socket; stops at a close or when the peer is gone."""
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, _Close):
                    await self.close(item.code)
                    return
                await self.send(text_data=item)
        except asyncio.CancelledError:
            raise
        except Exception:  # the transport went away under us; disconnect follows
            logger.debug("rxdjango: send failed, connection is gone", exc_info=True)

    def deliver(self, anchor: Any, frame: str) -> None:
        """Hub callback (on our loop): hold live frames until the anchor's end marker."""
        held = self._held.get(anchor)
        if held is not None:
            held.append(frame)
        elif self.lifecycle is not Lifecycle.CLOSED:
            self._outbox.put_nowait(frame)

    async def group_add(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self._groups.add(group)

    # -- incoming -----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.lifecycle in (Lifecycle.CLOSING, Lifecycle.CLOSED):
            return
        raw = text_data if text_data is not None else bytes_data or b""
        if len(raw) > rx_settings.RX_MAX_MESSAGE_SIZE:
            self.send_frame(error_frame("frame too large"))
            return
        try:
            frame = _codec.decode(raw)
        except ValueError:
            frame = _INVALID
        if self.lifecycle is Lifecycle.AWAITING_AUTH:
            await self._authenticate(frame)
        elif frame is _INVALID:
            self.send_frame(error_frame("frame is not valid JSON"))
        else:
            self._dispatch(frame)

    def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, dict) and "token" in frame:
            self.send_frame(error_frame("already authenticated"))
        else:
            self.send_frame(error_frame("unknown message"))

    # -- authentication and start sequence ----------------------------------------------

    async def _auth_timeout(self) -> None:
        await asyncio.sleep(float(rx_settings.RX_AUTH_TIMEOUT))
        if self.lifecycle is Lifecycle.AWAITING_AUTH:
            self._fail(Status.TIMEOUT)

    def _fail(self, status: Status) -> None:
        self.send_frame(auth_reply(status))
        self._close_after_queued(CloseCode[status.name])
        self._move(Lifecycle.CLOSING)

    async def _authenticate(self, frame: Any) -> None:
        self._auth_timer.cancel()
        self._move(Lifecycle.STARTING)
        try:
            anchors, last_update = await self._admit(frame)
        except _AuthFailure as failure:
            self._fail(failure.status)
            return
        except Exception:
            self._fail_internally("admitting a client")
            return
        self.send_frame(auth_reply(Status.OK))
        assert self.channel is not None
        try:
            await call_hook(self.channel.on_connect, last_update)
            self.send_frame({"type": Reply.INITIAL_ANCHORS, "anchorIds": anchors})
            for anchor in anchors:
                await self._start_anchor(anchor)
        except Exception:
            self._fail_internally("starting a client")
            return
        if self.lifecycle is Lifecycle.STARTING:
            self._move(Lifecycle.LIVE)

    def _fail_internally(self, doing: str) -> None:
        """A server-side error: log it with its traceback, tell the client nothing more."""
        logger.exception("rxdjango: error while %s of %s", doing, self.channel_class.channel_id)
        self.send_frame(error_frame("internal error", Status.SERVER_ERROR))
        self._close_after_queued(1011)
        self._move(Lifecycle.CLOSING)

    async def _admit(self, frame: Any) -> tuple[list[Any], float | None]:
        """Check token, permission and anchors, in that order (raises _AuthFailure)."""
        token = frame.get("token") if isinstance(frame, dict) else None
        if not isinstance(token, str):
            raise _AuthFailure(Status.BAD_REQUEST)
        last_update = frame.get("lastUpdate")
        if isinstance(last_update, bool) or not isinstance(last_update, int | float):
            last_update = None
        user = await database_sync_to_async(user_for_token)(token)
        if user is None:
            raise _AuthFailure(Status.UNAUTHORIZED)
        kwargs = dict(self.scope.get("url_route", {}).get("kwargs", {}))
        allowed = await call_hook(self.channel_class.has_permission, user, **kwargs)
        if allowed is not True:
            raise _AuthFailure(Status.FORBIDDEN)
        self.user, self.user_id = user, user.pk
        self.channel = self.channel_class(self, user, kwargs)
        anchors = await self._anchor_ids(kwargs)
        if anchors is None:
            raise _AuthFailure(Status.NOT_FOUND)
        return anchors, last_update

    async def _anchor_ids(self, kwargs: dict[str, Any]) -> list[Any] | None:
        """Anchor pks as sent on the wire; None when a single anchor does not exist."""
        assert self.channel is not None
        model = self.channel_class.state_model().anchor_model
        if self.channel_class.many:
            found = await call_hook(self.channel.list_instances, **kwargs)
            return await database_sync_to_async(_listed_ids)(model, found)
        instance_id = await call_hook(self.channel.get_instance_id, **kwargs)
        return await database_sync_to_async(_existing_id)(model, instance_id)

    async def _start_anchor(self, anchor: Any) -> None:
        ref: AnchorRef = (self.channel_class.channel_id, anchor)
        backend = get_backend()
        self._held[anchor] = []
        backend.subscribe(ref, self)
        self._subscriptions.append(ref)
        snapshot = await database_sync_to_async(backend.snapshot)(self.channel_class, anchor)
        tstamp = backend.clock()
        if snapshot is not None:
            tstamp = snapshot.tstamp
            items = (
                _codec.encode_bytes(
                    {**record.data, "_tstamp": record.tstamp, "_operation": Operation.INITIAL_STATE}
                )
                for record in snapshot.records
                if record.owner is None or record.owner == self.user_id
            )
            for frame in _codec.chunk_array(items, int(rx_settings.RX_FRAME_SIZE)):
                self.send_frame(frame)
        self.send_frame([end_marker(tstamp)])
        for frame in self._held.pop(anchor, []):
            self.send_frame(frame)


_INVALID = object()


def _listed_ids(model: type[Model], found: Any) -> list[Any]:
    if isinstance(found, QuerySet):
        return [pk_repr(pk) for pk in found.values_list("pk", flat=True)]
    return [pk_repr(model._meta.pk.to_python(pk)) for pk in found]


def _existing_id(model: type[Model], instance_id: Any) -> list[Any] | None:
    try:
        pk = model._meta.pk.to_python(instance_id)
    except (ValidationError, ValueError, TypeError):
        return None
    if pk is None or not model._default_manager.filter(pk=pk).exists():
        return None
    return [pk_repr(pk)]
