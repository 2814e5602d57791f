"""Channel locks in Redis that a dead process gives up within seconds.

A channel's lock serializes its propagations and anchor installs across processes.
It must outlive any propagation, however long (a 10,000-row ``update()``), yet a
process killed while holding it must not stall the channel for long. So the lock is
a short lease (:data:`LEASE_SECONDS`) that one keeper thread per process renews while
it is held: a live holder keeps it as long as it needs, a dead one loses it when its
lease runs out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import LockError, RedisError

from .. import _telemetry
from ..exceptions import RxDjangoError

__all__ = ["LEASE_SECONDS", "WAIT_SECONDS", "ChannelLocks"]

logger = logging.getLogger("rxdjango")

#: How long a channel lock outlives its holder's last renewal (renewed every third).
LEASE_SECONDS = 5.0
#: Longest a propagation or load waits for a channel's lock before it fails.
WAIT_SECONDS = 60.0


class ChannelLocks:
    """The channel locks of one process, each renewed while held."""

    def __init__(self, redis: Any, lease: float = LEASE_SECONDS) -> None:
        self.redis = redis
        self.lease = lease
        self._held: dict[int, Any] = {}
        self._guard = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._stopped = threading.Event()

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        """Hold the lock at ``key`` for the block (waiting up to :data:`WAIT_SECONDS`)."""
        lock = self.redis.lock(
            key, timeout=self.lease, sleep=0.002, blocking_timeout=WAIT_SECONDS, thread_local=False
        )
        if not lock.acquire():
            raise RxDjangoError(f"timed out waiting for the Redis lock {key}")
        with self._guard:
            self._held[id(lock)] = lock
            self._start_keeper()
        try:
            yield
        finally:
            with self._guard:
                del self._held[id(lock)]
            try:
                lock.release()
            except (LockError, RedisError):
                logger.warning("rxdjango: the Redis lock %s expired before release", key)

    def stop(self) -> None:
        self._stopped.set()

    def _start_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(
                target=self._keep, name="rxdjango-lock-keeper", daemon=True
            )
            self._keeper.start()

    def _keep(self) -> None:
        """Renew every held lock a few times per lease."""
        while not self._stopped.wait(self.lease / 3):
            with self._guard:
                held = list(self._held.values())
            for lock in held:
                try:
                    lock.reacquire()
                except LockError:
                    pass  # released (or lost) meanwhile: its holder finds out on release
                except RedisError as error:
                    _telemetry.redis_errors.inc()
                    logger.warning("rxdjango: could not renew a Redis lock (%s)", error)
