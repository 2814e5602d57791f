"""Anchor locks in Redis: waiters sleep until woken, a dead holder frees them in seconds.

An anchor's lock orders the propagations, loads and drops of that anchor across
processes; different anchors never wait for each other. A lock must outlive any
propagation, however long (a 10,000-row ``update()``), yet a process killed while
holding it must not stall the anchor for long. So it is a short lease
(:data:`LEASE_SECONDS`) that one keeper thread per process renews while held.

Nobody polls: a waiter blocks on the lock's wake list (``BLPOP``) and the holder
pushes to it when it lets go, so the next one runs as soon as the lock is free;
if the holder died, the wait ends with its lease. Locks of several anchors are
taken in one order (their keys sorted), so two holders never wait on each other.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _telemetry
from ..exceptions import RxDjangoError

__all__ = ["LEASE_SECONDS", "WAIT_SECONDS", "AnchorLocks", "LockKeys"]

logger = logging.getLogger("rxdjango")

#: How long a lock outlives its holder's last renewal (renewed every third).
LEASE_SECONDS = 5.0
#: Longest a propagation or load waits for an anchor's lock before it fails.
WAIT_SECONDS = 60.0
#: Longest one blocking wait on a wake list (a client's socket timeout may be short).
_WAIT_SLICE = 1.0

#: KEYS: lock. ARGV: token, lease ms. Returns 0 if taken, else ms left of the holder's lease.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return 1 end
return left
"""

#: KEYS: lock, wake list. ARGV: token, lease ms. Frees the lock and wakes one waiter.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, 0)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

#: KEYS: lock. ARGV: token, lease ms. Extends the lease if still held.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

LockKeys = tuple[str, str]
"""An anchor's lock key and the key of its wake list (one hash slot)."""


class AnchorLocks:
    """The anchor locks held by one process, each renewed while held."""

    def __init__(self, redis: Any, lease: float = LEASE_SECONDS) -> None:
        self.redis = redis
        self.lease_ms = int(lease * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        #: lock key -> token, for every lock this process holds
        self._held: dict[str, str] = {}
        self._guard = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._stopped = threading.Event()

    @contextmanager
    def held(self, locks: Iterable[LockKeys], wait: bool = True) -> Iterator[bool]:
        """Hold every lock of ``locks`` for the block (True), taken in key order (each
        waited for up to :data:`WAIT_SECONDS`). Free locks are taken in one round trip,
        however many; the first one held elsewhere is waited for before those after it.
        Without ``wait``, if one is held elsewhere, none is kept and the block gets False."""
        ordered = sorted(set(locks))
        taken: list[tuple[LockKeys, str]] = []
        try:
            while len(taken) < len(ordered):
                taken += self._take_free(ordered[len(taken) :])
                if len(taken) < len(ordered):
                    if not wait:
                        yield False
                        return
                    lock = ordered[len(taken)]
                    taken.append((lock, self._take(lock)))
            yield True
        finally:
            self._let_go_all(taken[::-1])

    def stop(self) -> None:
        self._stopped.set()

    def _take(self, lock: LockKeys) -> str:
        key, wake = lock
        token = uuid.uuid4().hex
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            left_ms = int(self._acquire(keys=[key], args=[token, self.lease_ms]))
            if left_ms == 0:
                with self._guard:
                    self._held[key] = token
                    self._start_keeper()
                return token
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RxDjangoError(f"timed out waiting for the Redis lock {key}")
            # Woken by the holder's release, else when its lease ends (it died). A
            # client whose socket timeout is shorter than the wait times out: try again.
            with suppress(RedisTimeoutError):
                self.redis.blpop(
                    [wake],
                    timeout=round(max(0.001, min(left_ms / 1000, remaining, _WAIT_SLICE)), 3),
                )

    def _take_free(self, locks: list[LockKeys]) -> list[tuple[LockKeys, str]]:
        """Try every lock of ``locks`` at once; keep those before the first one held
        elsewhere (and give back any taken after it: locks are held in key order)."""
        tokens = [uuid.uuid4().hex for _ in locks]
        pipe = self.redis.pipeline(transaction=False)
        for (key, _), token in zip(locks, tokens, strict=True):
            # EVAL by name: no script check, and redis-py's cluster pipeline routes it
            pipe.execute_command("EVAL", _ACQUIRE, 1, key, token, self.lease_ms)
        results = [int(left_ms) for left_ms in pipe.execute()]
        free = next((n for n, left_ms in enumerate(results) if left_ms != 0), len(locks))
        kept = list(zip(locks[:free], tokens[:free], strict=True))
        with self._guard:
            for (key, _), token in kept:
                self._held[key] = token
            if kept:
                self._start_keeper()
        beyond = [
            (lock, token)
            for lock, token, left_ms in list(zip(locks, tokens, results, strict=True))[free:]
            if left_ms == 0
        ]
        if beyond:
            self._let_go_all(beyond)
        return kept

    def _let_go_all(self, taken: list[tuple[LockKeys, str]]) -> None:
        """Release every lock of ``taken`` in one round trip, waking one waiter of each."""
        if not taken:
            return
        with self._guard:
            for (key, _), _token in taken:
                self._held.pop(key, None)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for (key, wake), token in taken:
                pipe.execute_command("EVAL", _RELEASE, 2, key, wake, token, self.lease_ms)
            for ((key, _), _token), released in zip(taken, pipe.execute(), strict=True):
                if not released:
                    logger.warning("rxdjango: the Redis lock %s expired before release", key)
        except RedisError as error:
            _telemetry.redis_errors.inc()
            logger.warning("rxdjango: could not release %d Redis lock(s) (%s)", len(taken), error)

    def _start_keeper(self) -> None:
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(
                target=self._keep, name="rxdjango-lock-keeper", daemon=True
            )
            self._keeper.start()

    def _keep(self) -> None:
        """Renew every held lock a few times per lease."""
        while not self._stopped.wait(self.lease_ms / 3000):
            with self._guard:
                held = list(self._held.items())
            for key, token in held:
                try:
                    self._renew(keys=[key], args=[token, self.lease_ms])
                except RedisError as error:
                    _telemetry.redis_errors.inc()
                    logger.warning("rxdjango: could not renew a Redis lock (%s)", error)
