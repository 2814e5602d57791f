"""Limits on incoming frames (``RX_RATE_LIMIT`` per second), per connection and per user.

A token bucket lets bursts of up to one second's worth through. A frame over the
limit gets an ``error`` reply and is not handled. When more frames than the limit
have been refused with no quiet second between two refusals (the client keeps
sending over the limit), the connection is closed with 4429. Counting the refusals
of a whole flood, not of one second, closes it even when the server takes the
frames in more slowly than the client sends them (a busy server refills the bucket
while it reads, so per second it would see fewer refusals than were sent).

Every connection has its own bucket, and the connections of one user in one process
also share one (:class:`UserRates`), so opening more sockets does not multiply what
a user may send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

__all__ = ["RateLimit", "UserRates", "Verdict", "user_rates"]


class Verdict(Enum):
    ACCEPT = "accept"
    REFUSE = "refuse"
    CLOSE = "close"


class RateLimit:
    def __init__(
        self, per_second: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = float(per_second or 0)
        self._clock = clock
        self._tokens = self.per_second
        self._last = clock()
        self._last_refusal = float("-inf")
        #: refusals since the last quiet second
        self._refused_in_flood = 0

    def check(self) -> Verdict:
        """Spend one token for an incoming frame."""
        if not self.per_second:
            return Verdict.ACCEPT
        now = self._clock()
        self._tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return Verdict.ACCEPT
        if now - self._last_refusal >= 1:
            self._refused_in_flood = 0  # a quiet second: a new flood starts
        self._last_refusal = now
        self._refused_in_flood += 1
        return Verdict.CLOSE if self._refused_in_flood > self.per_second else Verdict.REFUSE


class UserRates:
    """One shared bucket per user with connections in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[Any, tuple[RateLimit, int]] = {}

    def acquire(self, user_id: Any, per_second: float | None) -> RateLimit:
        with self._lock:
            bucket, users = self._buckets.get(user_id, (None, 0))
            if bucket is None:
                bucket = RateLimit(per_second)
            self._buckets[user_id] = (bucket, users + 1)
            return bucket

    def release(self, user_id: Any) -> None:
        with self._lock:
            bucket, users = self._buckets.get(user_id, (None, 0))
            if bucket is None:
                return
            if users <= 1:
                del self._buckets[user_id]
            else:
                self._buckets[user_id] = (bucket, users - 1)


user_rates = UserRates()
