"""What goes out to a client: one ordered outbox, one writer task, slow clients dropped.

:class:`Sending` is the part of :class:`~rxdjango._consumer.ChannelConsumer` that
queues frames and sends them. Every frame goes through one ``Outbox`` drained by one
writer task, so the client sees frames in exactly the order they were queued; live
frames of an anchor still being started are held until its end marker. A client too
far behind (``RX_SEND_QUEUE_LIMIT``) or whose frames stopped moving
(``RX_SEND_TIMEOUT``) is closed instead of buffered for without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import _codec, _telemetry
from ._hub import Retained
from ._lifecycle import Lifecycle
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
        async def send(self, text_data: str | None = None, bytes_data: Any = None) -> None: ...

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
        if self.lifecycle in (Lifecycle.CLOSING, Lifecycle.CLOSED) or self._outbox.closed:
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

    async def _write_loop(self) -> None:
        """The only sender on this socket; stops at a close or when the peer is gone."""
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, Close):
                    await self.close(item.code)
                    return
                if isinstance(item, bytes):
                    await self.send(bytes_data=item)
                else:
                    await self.send(text_data=item)
                self._outbox.sent()
                _telemetry.frames_sent.inc()
                _telemetry.bytes_sent.inc(len(item))
        except asyncio.CancelledError:
            raise
        except Exception:  # the transport went away under us; disconnect follows
            logger.debug("rxdjango: send failed, connection is gone", exc_info=True)
        finally:
            self._outbox.close()  # nothing more will be sent: producers stop waiting
