"""A connection's queue of outgoing frames, bounded in bytes.

A client that stops reading makes the server's writes block; without a bound the
frames meant for it would pile up in memory for as long as it stays connected.
Everything waiting for one client counts against ``RX_SEND_QUEUE_LIMIT``: live
frames, live frames held back until an anchor's initial state is sent, and the
initial state itself, which is produced chunk by chunk as room appears (a
client that never reads costs at most the limit plus one chunk). A live frame
that would cross the bound, or a queue that has not moved for
``RX_SEND_TIMEOUT`` seconds, closes the connection with 4408: the client
reconnects with ``lastUpdate`` and catches up from the history.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Close", "Outbox"]


@dataclass(frozen=True)
class Close:
    """Queued after the frames that must still reach the client before it is closed."""

    code: int


class Outbox:
    """FIFO of frames and one final ``Close``, drained by a single sender."""

    def __init__(self, limit: int, on_ready: Callable[[], None]) -> None:
        self.limit = limit
        #: Called after each item queued: the sender takes it (see ``_consumer_sending``).
        self._on_ready = on_ready
        #: Bytes of queued frames plus bytes charged for frames held elsewhere.
        self.waiting_bytes = 0
        self._items: deque[tuple[str | bytes | Close, int]] = deque()
        # A future made only while a producer waits for room: an idle connection holds
        # none (an asyncio.Event costs ~0.8 KiB, and a process may hold 10,000 outboxes).
        self._room: asyncio.Future[None] | None = None
        self._closed = False
        #: Whether the sender is sending an item it took (it may block on the peer).
        self.sending = False
        #: Monotonic time the queue last moved (an item sent, or nothing waiting).
        self.moved_at = time.monotonic()

    @property
    def closed(self) -> bool:
        """Nothing more will be sent (the connection is going away)."""
        return self._closed

    def charge(self, size: int) -> bool:
        """Count ``size`` bytes kept for this client outside the queue; False (nothing
        counted) if that would cross the limit."""
        if self.waiting_bytes + size > self.limit:
            return False
        self.waiting_bytes += size
        return True

    def refund(self, size: int) -> None:
        self.waiting_bytes = max(0, self.waiting_bytes - size)
        self._wake_room()

    def put(self, frame: str | bytes) -> bool:
        """Queue a live frame; False when it would cross the limit (nothing queued)."""
        size = len(frame)
        if self._closed or not self.charge(size):
            return False
        self._append(frame, size)
        return True

    async def put_when_room(self, frame: str) -> bool:
        """Queue ``frame`` once what waits leaves room for it (at once if nothing waits);
        False if the outbox was closed meanwhile."""
        size = len(frame)
        while not self._closed and self.waiting_bytes and self.waiting_bytes + size > self.limit:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)  # one waiter's cancellation is not the others'
        if self._closed:
            return False
        self.waiting_bytes += size
        self._append(frame, size)
        return True

    def put_charged(self, frame: str) -> None:
        r"""Queue a frame whose bytes were :meth:`charge`\ d while it was held elsewhere."""
        if not self._closed:
            self._append(frame, len(frame))

    def put_close(self, code: int) -> None:
        self._items.append((Close(code), 0))
        self._on_ready()

    def _append(self, frame: str | bytes, size: int) -> None:
        if not self._items and not self.sending:
            self.moved_at = time.monotonic()  # the queue starts waiting now
        self._items.append((frame, size))
        self._on_ready()

    def close(self) -> None:
        """Forget everything waiting and refuse what comes (the connection is going)."""
        self._closed = True
        self._items.clear()
        self.waiting_bytes = 0
        self._wake_room()

    def _wake_room(self) -> None:
        if self._room is not None:
            if not self._room.done():
                self._room.set_result(None)
            self._room = None

    def stalled_for(self) -> float:
        """Seconds frames have waited without the queue moving (0 if nothing waits)."""
        if not self._items and not self.sending:
            return 0.0
        return time.monotonic() - self.moved_at

    def take(self) -> str | bytes | Close | None:
        """The next item for the sender, or None if nothing waits; it counts as being
        sent until :meth:`sent`."""
        if not self._items:
            return None
        item, size = self._items.popleft()
        self.sending = True
        self.waiting_bytes -= size
        return item

    def sent(self) -> None:
        """The sender delivered the item it took."""
        self.sending = False
        self.moved_at = time.monotonic()
        self._wake_room()
