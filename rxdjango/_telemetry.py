"""What a running process reports to Prometheus (the ``prometheus`` extra).

The library's code records events here whether or not ``prometheus_client`` is
installed: without it every instrument is a no-op. With it, the instruments are
prometheus_client metrics, which gunicorn-style multiprocess mode aggregates when
``PROMETHEUS_MULTIPROC_DIR`` is set (gauges then sum over live processes).
:mod:`rxdjango.metrics` serves them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ENABLED",
    "anchors_cached",
    "anchors_watched",
    "bytes_sent",
    "frames_refused",
    "frames_sent",
    "propagating",
    "redis_errors",
    "redis_reconnects",
    "requests_refused",
    "revocations",
    "slow_clients_closed",
    "sockets_open",
    "work",
]


class _Nothing:
    """Stands for any instrument when prometheus_client is not installed."""

    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...
    def set(self, value: float) -> None: ...
    def observe(self, value: float) -> None: ...

    def labels(self, *values: Any, **named: Any) -> _Nothing:
        return self


try:
    from prometheus_client import Counter, Gauge, Histogram
except ImportError:  # the optional extra is not installed
    ENABLED = False
    _nothing: Any = _Nothing()
    sockets_open = anchors_watched = anchors_cached = _nothing
    propagation_seconds = frames_sent = bytes_sent = slow_clients_closed = _nothing
    frames_refused = revocations = redis_errors = redis_reconnects = work = _nothing
    requests_refused = _nothing
else:
    ENABLED = True
    sockets_open = Gauge(
        "rxdjango_sockets_open", "Client sockets open (authenticated)", multiprocess_mode="livesum"
    )
    anchors_watched = Gauge(
        "rxdjango_anchors_watched",
        "Anchors with at least one client of this process",
        multiprocess_mode="livesum",
    )
    anchors_cached = Gauge(
        "rxdjango_anchors_cached",
        "Anchors in the cache (the whole deployment's on Redis), read at scrape time",
        multiprocess_mode="max",
    )
    propagation_seconds = Histogram(
        "rxdjango_propagation_seconds",
        "From committed changes reaching propagation (at once in the committing process, "
        "when the relay reads them otherwise) to their frames handed to sockets and Redis",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    frames_sent = Counter("rxdjango_frames_sent", "Frames sent to clients")
    bytes_sent = Counter("rxdjango_bytes_sent", "Bytes of the frames sent to clients")
    slow_clients_closed = Counter(
        "rxdjango_slow_clients_closed", "Clients closed for not reading their frames (4408)"
    )
    frames_refused = Counter(
        "rxdjango_frames_refused", "Client frames refused by the rate limits (429)"
    )
    requests_refused = Counter(
        "rxdjango_requests_refused",
        "Writes and actions refused unrun because the server was behind (reason: busy 503, "
        "queued 429)",
        ["reason"],
    )
    revocations = Counter(
        "rxdjango_revocations", "Sockets closed because the user's access ended (4401/4403/4404)"
    )
    redis_errors = Counter("rxdjango_redis_errors", "Redis commands or connections that failed")
    redis_reconnects = Counter(
        "rxdjango_redis_reconnects", "Times the Redis pub/sub connection came back"
    )
    work = Counter(
        "rxdjango_propagation_work",
        "Work of propagating changes (kind: flushes, queries, serialized, frames, captured)",
        ["kind"],
    )


@contextmanager
def propagating() -> Iterator[None]:
    """Time one propagation of committed changes."""
    started = time.perf_counter()
    try:
        yield
    finally:
        propagation_seconds.observe(time.perf_counter() - started)
