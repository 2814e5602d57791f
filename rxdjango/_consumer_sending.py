"""What goes out to a client: one ordered outbox, one sender, slow clients dropped.

:class:`Sending` is the part of :class:`~rxdjango._consumer.ChannelConsumer` that
queues frames and sends them. Every frame goes through one ``Outbox`` drained by one
sender, so the client sees frames in exactly the order they were queued. A frame is
sent at once, in the pass that queued it, while the server's send completes without
waiting; from the first send that waits (the peer's socket buffer is full), a writer
task sends the rest, and later frames queue behind it. Live
frames of an anchor still being started are held until its end marker. A client too
far behind (``RX_SEND_QUEUE_LIMIT``) or whose frames stopped moving
(``RX_SEND_TIMEOUT``) is closed instead of buffered for without bound.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from . import _codec, _eager, _telemetry
from ._hub import Retained
from ._lifecycle import ENDING, Lifecycle
from ._outbox import Close, Outbox
from ._protocol import CloseCode
from ._state_stream import without_retained
from .conf import rx_settings

__all__ = ["Sending"]

logger = logging.getLogger("rxdjango")


class Sending:
    """The outgoing side of one connection (a part of it)."""

    lifecycle: Lifecycle
    loop: asyncio.AbstractEventLoop
    _outbox: Outbox
    _writer: asyncio.Task[None] | None
    _stall_timer: asyncio.TimerHandle | None
    #: the server's ASGI send (set by Channels' consumer)
    base_send: Callable[[dict[str, Any]], Awaitable[None]]
    _loop_thread: int | None
    #: live frames of anchors still starting, released after their end marker
    _held: dict[Any, list[str]]
    _anchors: list[Any]
    #: live frames handed to this connection so far
    _deliveries: int

    if TYPE_CHECKING:  # provided by the connection and by Channels' consumer

        def _move(self, target: Lifecycle) -> None: ...
        def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...
        def _event(self, name: str, level: int = logging.INFO, **fields: Any) -> None: ...
        async def close(self, code: int | None = None) -> None: ...

    def send_frame(self, data: Any) -> None:
        """Queue a JSON value (or ready JSON text, or bytes for a binary frame) for
        this client, in order.

        Callable from the event loop or from any other thread.
        """
        if self.lifecycle is Lifecycle.CLOSED:
            return
        text = data if isinstance(data, str | bytes) else _codec.encode(data)
        if threading.get_ident() == self._loop_thread:
            self._put(text)
        else:
            self.loop.call_soon_threadsafe(self._put, text)

    def deliver(self, anchor: Any, frame: str, retained: Retained | None = None) -> None:
        """Live frames of an anchor; held back until that anchor's end marker."""
        self._deliveries += 1
        if retained and len(self._anchors) > 1:
            filtered = without_retained(frame, retained, set(self._anchors) - {anchor})
            if filtered is None:
                return
            frame = filtered
        held = self._held.get(anchor)
        if held is not None:
            # Counted while it waits for the anchor's end marker.
            if self._outbox.closed:
                return
            if self._outbox.charge(len(frame)):
                held.append(frame)
            else:
                self._drop_slow_client()
        elif anchor in self._anchors:
            self._put(frame)

    def deliver_any(self, frame: str) -> None:
        self._put(frame)

    def _put(self, frame: str | bytes) -> None:
        """Queue a frame unless the connection is closing; drop a client that is too
        far behind (``RX_SEND_QUEUE_LIMIT``) instead of buffering without bound."""
        if self.lifecycle in ENDING or self._outbox.closed:
            return
        if not self._outbox.put(frame):
            self._drop_slow_client()

    def _drop_slow_client(self) -> None:
        if self.lifecycle is Lifecycle.CLOSED:
            return
        _telemetry.slow_clients_closed.inc()
        self._event("client_closed_slow", logging.WARNING, bytes_waiting=self._outbox.waiting_bytes)
        self._outbox.close()
        self._held.clear()
        if self.lifecycle is not Lifecycle.CLOSING:
            self._move(Lifecycle.CLOSING)
        if self._writer is not None:
            self._writer.cancel()  # it may be blocked on the peer's full socket
        self._spawn(self._close_now(CloseCode.TIMEOUT))

    def _watch_stalls(self) -> None:
        """Close a client whose frames have not moved for ``RX_SEND_TIMEOUT`` seconds
        (it stopped reading; a live frame crossing the limit may never come). Checked by
        a timer every quarter of that: an idle connection holds no task for it."""
        self._stall_timer = None
        if self.lifecycle is Lifecycle.CLOSED:
            return
        limit = float(rx_settings.RX_SEND_TIMEOUT)
        if self._outbox.stalled_for() >= limit:
            self._drop_slow_client()
            return
        self._stall_timer = self.loop.call_later(limit / 4, self._watch_stalls)

    async def _close_now(self, code: int) -> None:
        try:
            await self.close(code)
        except Exception:  # the transport is already gone
            logger.debug("rxdjango: close failed, connection is gone", exc_info=True)

    def _close_after_queued(self, code: int) -> None:
        self._outbox.put_close(code)

    def _flush(self) -> None:
        """Send what waits, in order: at once while the server's send completes without
        waiting (a fan-out then leaves nothing behind per socket, see ``_eager``), and
        on a writer task from the first send that has to wait, or a close."""
        if self._writer is not None:
            return  # the writer sends it in its turn
        while (item := self._outbox.take()) is not None:
            if isinstance(item, Close):
                self._writer = self._spawn(self._write_rest(item, None))
                return
            try:
                sending = self.base_send(_send_event(item))
                rest = _eager.start(sending) if inspect.iscoroutine(sending) else sending
            except Exception:  # the transport went away under us; disconnect follows
                logger.debug("rxdjango: send failed, connection is gone", exc_info=True)
                self._outbox.close()
                return
            if rest is not None:
                self._writer = self._spawn(self._write_rest(item, rest))
                return
            self._sent(item)

    async def _write_rest(self, item: str | bytes | Close, rest: Awaitable[Any] | None) -> None:
        """The only sender while it runs: finishes ``item``'s send (``rest``, if it was
        started), then sends what waits until nothing does; stops at a close or when the
        peer is gone."""
        try:
            while True:
                if isinstance(item, Close):
                    await self.close(item.code)
                    self._outbox.close()
                    return
                await (rest if rest is not None else self.base_send(_send_event(item)))
                self._sent(item)
                rest = None
                following = self._outbox.take()
                if following is None:
                    return
                item = following
        except asyncio.CancelledError:
            self._outbox.close()
            raise
        except Exception:  # the transport went away under us; disconnect follows
            logger.debug("rxdjango: send failed, connection is gone", exc_info=True)
            self._outbox.close()  # nothing more will be sent: producers stop waiting
        finally:
            self._writer = None

    def _sent(self, item: str | bytes) -> None:
        self._outbox.sent()
        _telemetry.frames_sent.inc()
        _telemetry.bytes_sent.inc(len(item))


def _send_event(item: str | bytes) -> dict[str, Any]:
    if isinstance(item, bytes):
        return {"type": "websocket.send", "bytes": item}
    return {"type": "websocket.send", "text": item}
