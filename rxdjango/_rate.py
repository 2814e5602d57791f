"""Limits on incoming frames (``RX_RATE_LIMIT`` per second), per connection and per user.

A token bucket lets bursts of up to one second's worth through. A frame over the
limit gets an ``error`` reply and is not handled. When more frames than the limit
are refused within one second (the client sends over twice the limit), the
connection is closed with 4429. Every connection has its own bucket, and the
connections of one user in one process also share one (:class:`UserRates`), so
opening more sockets does not multiply what a user may send.
"""

from __future__ import annotations

import threading
import time
from enum import Enum
from typing import Any

__all__ = ["RateLimit", "UserRates", "Verdict", "user_rates"]


class Verdict(Enum):
    ACCEPT = "accept"
    REFUSE = "refuse"
    CLOSE = "close"


class RateLimit:
    def __init__(self, per_second: float | None) -> None:
        self.per_second = float(per_second or 0)
        self._tokens = self.per_second
        self._last = time.monotonic()
        self._window_start = self._last
        self._refused_in_window = 0

    def check(self) -> Verdict:
        """Spend one token for an incoming frame."""
        if not self.per_second:
            return Verdict.ACCEPT
        now = time.monotonic()
        self._tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return Verdict.ACCEPT
        if now - self._window_start >= 1:
            self._window_start, self._refused_in_window = now, 0
        self._refused_in_window += 1
        return Verdict.CLOSE if self._refused_in_window > self.per_second else Verdict.REFUSE


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
