"""A connection's queue of outgoing frames, bounded in bytes.

A client that stops reading makes the server's writes block; without a bound the
frames meant for it would pile up in memory for as long as it stays connected.
Live frames are counted against ``RX_SEND_QUEUE_LIMIT``; initial-state frames are
not (they are bounded by the anchor's size and already in memory). When the bound
is crossed the queue is emptied and the connection is closed with 4408: the client
reconnects with ``lastUpdate`` and catches up from the history.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

__all__ = ["Close", "Outbox"]


@dataclass(frozen=True)
class Close:
    """Queued after the frames that must still reach the client before it is closed."""

    code: int


class Outbox:
    """FIFO of frames and one final ``Close``, drained by a single writer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting_bytes = 0
        self._items: deque[tuple[str | Close, int]] = deque()
        self._ready = asyncio.Event()

    def put(self, frame: str, counted: bool = True) -> bool:
        """Queue ``frame``; False when counted frames now exceed the limit (nothing queued)."""
        size = len(frame) if counted else 0
        if size and self.waiting_bytes + size > self.limit:
            return False
        self.waiting_bytes += size
        self._items.append((frame, size))
        self._ready.set()
        return True

    def put_close(self, code: int) -> None:
        self._items.append((Close(code), 0))
        self._ready.set()

    def discard(self) -> None:
        """Forget everything waiting (the connection is being dropped)."""
        self._items.clear()
        self.waiting_bytes = 0

    async def get(self) -> str | Close:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, size = self._items.popleft()
        self.waiting_bytes -= size
        return item
