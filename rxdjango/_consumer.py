"""The WebSocket consumer behind ``ContextChannel.as_asgi()``.

It only moves messages: frames in are decoded and dispatched by lifecycle
state; everything out goes through one outbox drained by one sender (at once
while sends complete, on a writer task while one waits), so the client sees auth
reply, anchors, initial state, end marker and live records in exactly the order
they were queued.

Ordinary action calls run one at a time on a call worker task (in call order);
detached calls run as tasks of their own. Both are cancelled when the socket
closes. Channel-layer events go to ``@consumer`` methods, in arrival order.

Lifecycle: AWAITING_AUTH → STARTING → LIVE, and CLOSING / CLOSED from anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ValidationError
from django.db import router

from . import _codec, _events, _shutdown, _telemetry
from ._access import Credential
from ._admission import AuthFailure, admit, existing_id
from ._backends import get_backend
from ._change import AnchorRef
from ._consumer_requests import Job, Requests
from ._consumer_sending import Sending
from ._db_threads import in_db_thread
from ._hooks import call_hook
from ._hub import hub
from ._layers import SYSTEM_EVENT, SYSTEM_GROUP, cross_process_layer, get_layer
from ._lifecycle import ALLOWED, ENDING, Lifecycle
from ._outbox import Outbox
from ._protocol import (
    CloseCode,
    Reply,
    Status,
    auth_reply,
    delete_record,
    end_marker,
    error_frame,
)
from ._rate import RateLimit, Verdict, user_rates
from ._registry import ChannelSpec
from ._relay import ensure_relay, relay_known
from ._state_model import pk_repr, wire_pk
from ._state_stream import state_items
from .conf import rx_settings

if TYPE_CHECKING:
    from ._contract import Channel

__all__ = ["ChannelConsumer", "Lifecycle"]

logger = logging.getLogger("rxdjango")

#: Close codes that mean the user's access ended (a revocation, a failed re-check).
_ACCESS_ENDED = frozenset({CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN, CloseCode.NOT_FOUND})


class ChannelConsumer(Requests, Sending, AsyncWebsocketConsumer):
    """One client connection to one ``ContextChannel`` class."""

    def __init__(self, channel_class: Any) -> None:
        super().__init__()
        assert channel_class.spec is not None, "abstract channels are not routed"
        #: The channel served (``ContextChannel.as_asgi`` passes the class).
        self.spec: ChannelSpec = channel_class.spec
        self.lifecycle = Lifecycle.AWAITING_AUTH
        self.channel: Channel | None = None
        self.user: Any = None
        self.user_id: Any = None
        self.loop: asyncio.AbstractEventLoop
        self._outbox = Outbox(int(rx_settings.RX_SEND_QUEUE_LIMIT), self._flush)
        self._rate = RateLimit(rx_settings.RX_RATE_LIMIT)
        #: the rate shared by this user's connections (once admitted)
        self._user_rate: RateLimit | None = None
        self._counted = False  # counted against RX_MAX_CONNECTIONS_PER_USER
        self._detached = 0
        self._running = False
        self._draining = False
        self._writer: asyncio.Task[None] | None = None
        self._calls: deque[Job] | None = None
        self._call_worker_task: asyncio.Task[None] | None = None
        # Timers, not tasks: an idle connection holds no coroutine (see docs/performance.md).
        self._auth_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._recheck_timer: asyncio.TimerHandle | None = None
        self._held: dict[Any, list[str]] = {}
        self._anchors: list[Any] = []
        self._admitted_anchors: list[Any] = []
        #: Live frames handed to this connection so far (see ``_restoring``).
        self._deliveries = 0
        self._loop_thread: int | None = None
        self._groups: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Names this socket among the user's connections, in every process.
        self.connection_id = uuid.uuid4().hex
        self.credential: Credential
        #: Monotonic time of the last check of access (admission, a re-check).
        self._checked_at = 0.0

    # -- ASGI plumbing ----------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """As Channels' consumer (messages dispatched one at a time), but with the
        embedded layer when none is configured, and on the layer only once the
        connection joins a group (see :meth:`group_add`)."""
        self.scope = scope
        self.channel_layer = get_layer(self.channel_layer_alias)
        self.channel_name = ""
        self.base_send = send
        self._dispatching = asyncio.Lock()
        try:
            while True:
                message = await receive()
                async with self._dispatching:
                    await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            await self._cleanup()

    def _move(self, target: Lifecycle) -> None:
        if target not in ALLOWED[self.lifecycle]:
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
        self._loop_thread = threading.get_ident()
        if _shutdown.draining():  # this process is going away: another one serves
            await self._close_now(CloseCode.RESTARTING)
            return
        _shutdown.install_handler()
        _shutdown.track(self)
        self._auth_timer = self.loop.call_later(
            float(rx_settings.RX_AUTH_TIMEOUT), self._auth_timed_out
        )
        self._watch_stalls()

    async def drain(self, deadline: float) -> None:
        """The process shuts down: refuse what waits, finish what runs (until
        ``deadline``), then close with 1012 after every reply (see ``_shutdown``)."""
        self._refuse_waiting()
        # A client being started finishes starting (its requests wait, then are refused).
        while self._busy or self.lifecycle is Lifecycle.STARTING:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.01)
        if self.lifecycle in ENDING:
            return
        self._close_after_queued(CloseCode.RESTARTING)
        self._move(Lifecycle.CLOSING)
        if self._writer is not None:  # the replies and the close go out before the server stops
            await asyncio.wait([self._writer], timeout=max(0.0, deadline - time.monotonic()))

    async def disconnect(self, code: int) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self.lifecycle is Lifecycle.CLOSED:
            return
        was_admitted = self.channel is not None
        self.lifecycle = Lifecycle.CLOSED
        self._outbox.close()
        backend = get_backend()
        if was_admitted:
            _telemetry.sockets_open.dec()
            backend.unregister(self.spec.channel_id, self)
        if self._counted:
            backend.release_connection(self.user_id, self.connection_id)
        if self._user_rate is not None:
            user_rates.release(self.user_id)
        for anchor in self._anchors:
            backend.unsubscribe(self._ref(anchor), self)
        self._anchors.clear()
        for task in list(self._tasks):
            task.cancel()
        for timer in (self._auth_timer, self._stall_timer, self._recheck_timer):
            if timer is not None:
                timer.cancel()
        for group in self._groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        self._groups.clear()
        if self.channel is not None:
            try:
                await call_hook(self.channel.on_disconnect)
            except Exception:
                logger.exception("rxdjango: on_disconnect of %s raised", self.spec.channel_id)

    # -- outgoing -----------------------------------------------------------------------

    @property
    def anchor_ids(self) -> list[Any]:
        """The anchors of this client, in its order: while it starts (``on_connect``
        included) the ones it was admitted with, then the ones it watches."""
        if self.lifecycle is Lifecycle.STARTING:
            return list(self._admitted_anchors)
        return list(self._anchors)

    # -- hub callbacks (on our loop) -------------------------------------------------

    def anchor_deleted(self, anchor: Any) -> None:
        if anchor in self._anchors:
            self._anchors.remove(anchor)
            get_backend().unsubscribe(self._ref(anchor), self)

    def _event(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        """Log a notable event of this connection (``_events``), with its ids."""
        _events.emit(
            name,
            level,
            channel=self.spec.channel_id,
            anchors=self.anchor_ids,
            user=self.user_id,
            **fields,
        )

    def close_soon(self, code: int) -> None:
        if self.lifecycle in (Lifecycle.STARTING, Lifecycle.LIVE):
            if code in _ACCESS_ENDED:
                _telemetry.revocations.inc()
                self._event("client_revoked", code=code)
            self._close_after_queued(code)
            self._move(Lifecycle.CLOSING)

    def offer_anchors(self, anchors: list[Any]) -> None:
        if self.lifecycle in (Lifecycle.STARTING, Lifecycle.LIVE) and self.channel is not None:
            self._spawn(self._consider_offers(anchors))

    async def _consider_offers(self, anchors: list[Any]) -> None:
        assert self.channel is not None
        for anchor in anchors:
            if anchor in self._anchors:
                continue
            try:
                visible = await call_hook(self.channel.is_visible, anchor)
            except Exception:
                logger.exception("rxdjango: is_visible of %s raised", self.spec.channel_id)
                continue
            if visible is True:
                await self.add_anchor(anchor, at_beginning=True)

    # -- channel-layer events ----------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type", "")
        if isinstance(kind, str) and kind.startswith("websocket."):
            # Straight to the handler. Channels' dispatch first closes old database
            # connections on asgiref's one sync thread: a hop per frame of every socket
            # through the thread the project's sync code shares, for connections the
            # library does not use (its database work has threads of its own).
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"no handler for message type {kind}")
            await handler(message)
            return
        if kind == SYSTEM_EVENT:
            if self.channel is not None and isinstance(message.get("frame"), str):
                self.deliver_any(message["frame"])
            return
        handlers = self.spec.consumers.get(kind, ())
        if self.channel is None or self.lifecycle is Lifecycle.CLOSED:
            return
        if not handlers:
            logger.warning("rxdjango: %s has no @consumer for %r", self.spec.channel_id, kind)
            return
        for name in handlers:
            try:
                await getattr(self.channel, name)(message)
            except Exception:
                logger.exception("rxdjango: consumer %s of %s raised", name, self.spec.channel_id)

    async def group_add(self, group: str) -> None:
        """Join a Channels group. The connection takes a channel on the layer and
        listens to it from its first group on: most connections join none, and each
        listener costs the layer work per connection (Channels' in-memory layer scans
        every listening channel on each receive: n connections, n² steps)."""
        if not self.channel_name:
            self.channel_name = await self.channel_layer.new_channel()
            self._spawn(self._listen_on_layer())
        await self.channel_layer.group_add(group, self.channel_name)
        self._groups.add(group)

    async def _listen_on_layer(self) -> None:
        """Layer events, dispatched between the socket's frames as Channels does."""
        while True:
            message = await self.channel_layer.receive(self.channel_name)
            async with self._dispatching:
                await self.dispatch(message)

    # -- incoming -----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.lifecycle in ENDING:
            return
        verdict = self._rate.check()
        if verdict is Verdict.ACCEPT and self._user_rate is not None:
            verdict = self._user_rate.check()
        if verdict is not Verdict.ACCEPT:
            _telemetry.frames_refused.inc()
            self.send_frame(error_frame("too many frames", Status.TOO_MANY_REQUESTS))
            if verdict is Verdict.CLOSE:
                self._event("client_closed_rate_limited", logging.WARNING)
                self._close_after_queued(CloseCode.TOO_MANY_REQUESTS)
                self._move(Lifecycle.CLOSING)
            return
        raw = text_data if text_data is not None else bytes_data or b""
        limit = int(rx_settings.RX_MAX_MESSAGE_SIZE)
        # Characters first (cheap); UTF-8 may be up to 4 bytes per character.
        if len(raw) > limit or (
            isinstance(raw, str) and len(raw) * 4 > limit and len(raw.encode()) > limit
        ):
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

    # -- authentication and start sequence ----------------------------------------------

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.lifecycle is Lifecycle.AWAITING_AUTH:
            self._fail(Status.TIMEOUT)

    def _fail(self, status: Status) -> None:
        self.send_frame(auth_reply(status))
        self._close_after_queued(CloseCode[status.name])
        self._move(Lifecycle.CLOSING)

    async def _authenticate(self, frame: Any) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        self._move(Lifecycle.STARTING)
        started = time.monotonic()
        try:
            admission = await admit(self.spec, self.scope, frame, self)
        except AuthFailure as failure:
            self._fail(failure.status)
            return
        except Exception:
            self._fail_internally("admitting a client")
            return
        user_id = pk_repr(admission.user.pk)
        backend = get_backend()
        admitted = sync_to_async(backend.admit_connection, thread_sensitive=False)
        if not await admitted(user_id, self.connection_id):
            self._fail(Status.TOO_MANY_REQUESTS)
            return
        self._counted = True
        self.channel, self.user, self.user_id = admission.channel, admission.user, user_id
        self.credential = Credential(
            self.user_id, admission.token, admission.authenticator, self.scope
        )
        self._checked_at = started
        self._user_rate = user_rates.acquire(user_id, rx_settings.RX_USER_RATE_LIMIT)
        anchors, last_update = admission.anchors, admission.last_update
        self._admitted_anchors = anchors
        self.send_frame(auth_reply(Status.OK))
        _telemetry.sockets_open.inc()
        backend.register(self.spec.channel_id, self)
        using = router.db_for_read(self.spec.state_model().anchor_model)
        if not relay_known(using):  # changes made elsewhere reach this process's clients
            await in_db_thread(ensure_relay, using)
        if hub.revoked_since(self.user_id, started):
            # The user's access ended while we admitted them (the revocation found no
            # socket of theirs to close yet).
            self.close_soon(CloseCode.UNAUTHORIZED)
            return
        if not backend.spans_processes and cross_process_layer(self.channel_layer_alias):
            # The embedded backend reaches other processes' clients only through the layer.
            await self.group_add(SYSTEM_GROUP)
        try:
            await call_hook(self.channel.on_connect, last_update)
            self.send_frame({"type": Reply.INITIAL_ANCHORS, "anchorIds": anchors})
            for anchor in anchors:
                self._anchors.append(anchor)
                await self._start_anchor(anchor, since=last_update)
        except Exception:
            self._fail_internally("starting a client")
            return
        if self.lifecycle is Lifecycle.STARTING:
            self._move(Lifecycle.LIVE)
            self._schedule_recheck()

    def _fail_internally(self, doing: str) -> None:
        """A server-side error: log it with its traceback, tell the client nothing more."""
        logger.exception("rxdjango: error while %s of %s", doing, self.spec.channel_id)
        self.send_frame(error_frame("internal error", Status.SERVER_ERROR))
        self._close_after_queued(1011)
        self._move(Lifecycle.CLOSING)

    def _ref(self, anchor: Any) -> AnchorRef:
        return (self.spec.channel_id, anchor)

    async def _start_anchor(self, anchor: Any, since: float | None = None) -> None:
        """Subscribe, then send the anchor's state (or what changed ``since``), its end
        marker, and what arrived meanwhile.

        The state goes out chunk by chunk as the client takes it, so one that reads
        slowly holds the server's memory to ``RX_SEND_QUEUE_LIMIT`` plus a chunk.
        """
        ref = self._ref(anchor)
        backend = get_backend()
        self._held[anchor] = []
        backend.subscribe(ref, self)
        snapshot = await in_db_thread(backend.snapshot, self.spec, anchor, since)
        if snapshot is not None:
            tstamp = snapshot.tstamp
            if snapshot.resync:
                _events.emit(
                    "client_resync", channel=self.spec.channel_id, anchor=anchor, user=self.user_id
                )
                self.send_frame({"type": Reply.RESYNC, "anchorId": anchor})
            chunks = _codec.chunk_array(
                state_items(snapshot, self.spec.state_model(), self.user_id),
                int(rx_settings.RX_FRAME_SIZE),
            )
            while chunk := await sync_to_async(_next_or_none, thread_sensitive=False)(chunks):
                if not await self._outbox.put_when_room(chunk):
                    return  # the connection is going away
        else:
            tstamp = await _server_time()
        if not await self._outbox.put_when_room(_codec.encode([end_marker(tstamp)])):
            return
        for frame in self._held.pop(anchor, []):
            self._outbox.put_charged(frame)

    # -- list channels --------------------------------------------------------------------

    async def add_anchor(self, instance_id: Any, at_beginning: bool) -> bool:
        model = self.spec.state_model().anchor_model
        found = await in_db_thread(existing_id, model, instance_id)
        if found is None or found[0] in self._anchors or self.lifecycle is Lifecycle.CLOSED:
            return False
        anchor = found[0]
        if at_beginning:
            self._anchors.insert(0, anchor)
            self.send_frame({"type": Reply.PREPEND_ANCHOR, "anchorId": anchor})
        else:
            self._anchors.append(anchor)
            self.send_frame({"type": Reply.APPEND_ANCHOR, "anchorId": anchor})
        await self._start_anchor(anchor)
        return True

    async def remove_anchor(self, instance_id: Any) -> bool:
        state_model = self.spec.state_model()
        try:
            anchor = wire_pk(state_model.anchor_model, instance_id)
        except (ValidationError, ValueError, TypeError):
            return False
        if anchor not in self._anchors:
            return False
        self._anchors.remove(anchor)
        self._outbox.refund(sum(len(frame) for frame in self._held.pop(anchor, [])))
        get_backend().unsubscribe(self._ref(anchor), self)
        root_type = state_model.root.instance_type
        self.send_frame([delete_record(root_type, anchor, await _server_time())])
        return True

    async def clear_anchors(self) -> None:
        for anchor in list(self._anchors):
            await self.remove_anchor(anchor)


_INVALID = object()


def _next_or_none(chunks: Iterator[str]) -> str | None:
    return next(chunks, None)


async def _server_time() -> float:
    """The backend's clock, which may be a network call: kept off the event loop."""
    return await sync_to_async(get_backend().clock, thread_sensitive=False)()
