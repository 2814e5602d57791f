"""Leases that keep a Redis deployment honest without counting anything by hand.

Nothing here counts watchers or connections with increments a crash could leave
behind. Each process renews, from its heartbeat thread:

* one watch lease per anchor it serves (idle time, and so expiry, starts when the
  last lease ends: when its last client left, or when its process died);
* its own entry in the live-process set, which makes its connections count toward
  ``RX_MAX_CONNECTIONS_PER_USER`` (a dead process's stop counting at the next
  admission of that user).

The heartbeat also notices a new epoch (lost data) and drops expired anchors.
:class:`Upkeep` is the part of :class:`~.redis_backend.RedisBackend` that does this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import Enum
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from .. import _registry, _telemetry
from .._change import AnchorRef
from ..conf import rx_settings

if TYPE_CHECKING:
    from .redis_keys import Keys

__all__ = ["CONNECTIONS_TTL_MS", "Upkeep"]

logger = logging.getLogger("rxdjango")

#: How long a user's connection set outlives its last renewal (renewed a few times
#: within it while the user stays connected, so the key never outlives its users for long).
CONNECTIONS_TTL_MS = 3_600_000


class Upkeep:
    """Connection and watch leases, the heartbeat and expiry (a part of the backend)."""

    #: a sync ``redis.Redis``: redis-py's type hints mix sync and async results; typed Any
    redis: Any
    keys: Keys
    epoch: str
    process_id: str
    _connections: dict[str, Any]
    _connection_keys_renewed: dict[Any, float]
    _registered: bool
    _watched: set[AnchorRef]
    _watched_lock: threading.Lock
    _lease_lock: threading.Lock
    _releases: SimpleQueue[AnchorRef]
    _wake: threading.Event
    _stopped: threading.Event
    _needs_new_epoch: bool
    _offset_ms: float
    _admit: Callable[..., Any]
    _release: Callable[..., Any]
    _idle_check: Callable[..., Any]

    if TYPE_CHECKING:  # provided by the backend

        def _serve(self) -> None: ...
        def _now_ms(self) -> float: ...
        def _ensure_epoch(self, replace: bool = False) -> None: ...
        def _submit(self, command: Callable[..., Any], *args: Any) -> None: ...
        def _locked(self, refs: list[AnchorRef]) -> Any: ...
        def _check_epoch(self) -> None: ...
        def _purge(self, ref: AnchorRef) -> None: ...
        def _anchor_refs(self, channel_id: str) -> list[AnchorRef]: ...

    # -- connections ------------------------------------------------------------------

    def admit_connection(self, user_id: Any, connection_id: str) -> bool:
        """Counted in Redis per user. A connection counts while its process is live:
        each process renews one lease per heartbeat (not one per connection), and a
        process that died stops counting at the next admission of that user."""
        self._serve()
        if not self._registered:  # before the first heartbeat, so others see us live
            self.redis.zadd(self.keys.processes, {self.process_id: self._watch_deadline()})
            self._registered = True
        limit = rx_settings.RX_MAX_CONNECTIONS_PER_USER
        member = f"{self.process_id}:{connection_id}"
        live = self.redis.zrangebyscore(self.keys.processes, self._now_ms(), "+inf")
        cap = "" if limit is None else limit
        admitted = self._admit(
            keys=[self.keys.connections(user_id)],
            args=[member, cap, CONNECTIONS_TTL_MS, self.process_id, *live],
        )
        if admitted:
            with self._watched_lock:
                self._connections[member] = user_id
                self._connection_keys_renewed[user_id] = time.monotonic()
        return bool(admitted)

    def release_connection(self, user_id: Any, connection_id: str) -> None:
        member = f"{self.process_id}:{connection_id}"
        with self._watched_lock:
            self._connections.pop(member, None)
        self._submit(self.redis.srem, self.keys.connections(user_id), member)

    # -- watch leases, heartbeat, expiry ----------------------------------------------

    def _renew_watch(self, pipe: Any, ref: AnchorRef, deadline: float) -> None:
        """This process watches ``ref`` until ``deadline``. The lease key outlives the
        lease by the channel's TTL (idle time is counted from it), then goes by itself."""
        spec = _registry.spec_by_id(ref[0])
        ttl = spec.cache_ttl_seconds() if spec is not None else rx_settings.RX_CACHE_TTL
        pipe.zadd(self.keys.watch(ref), {self.process_id: deadline})
        pipe.pexpireat(self.keys.watch(ref), int(deadline + float(ttl) * 1000) + 1000)

    def _watch_deadline(self) -> float:
        return self._now_ms() + 3000 * float(rx_settings.RX_REDIS_HEARTBEAT)

    def _maintain(self) -> None:
        next_beat = next_sweep = 0.0
        while not self._stopped.is_set():
            now = time.monotonic()
            self._wake.wait(max(0.0, min(next_beat, next_sweep) - now))
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self._drain_releases()
                now = time.monotonic()
                if now >= next_beat or self._needs_new_epoch:
                    self._heartbeat()
                    next_beat = now + float(rx_settings.RX_REDIS_HEARTBEAT)
                if now >= next_sweep:
                    self.expire()
                    next_sweep = time.monotonic() + _sweep_interval()
            except RedisError as error:
                _telemetry.redis_errors.inc()
                logger.warning("rxdjango: Redis maintenance failed (%s); retrying", error)
                next_beat = time.monotonic() + 0.5
            except Exception:
                logger.exception("rxdjango: Redis maintenance failed")
                next_beat = next_sweep = time.monotonic() + 1.0

    def _heartbeat(self) -> None:
        """Renew this process's watch leases and notice lost data or a new epoch."""
        before = time.time()
        seconds, micros = self.redis.time()
        self._offset_ms = (seconds * 1000 + micros / 1000) - (before + time.time()) * 500
        if self._needs_new_epoch:
            self._ensure_epoch(replace=True)
            self._needs_new_epoch = False
        else:
            self._ensure_epoch()
        deadline = self._watch_deadline()
        with self._watched_lock:
            watched = list(self._watched)
            users = self._connection_keys_to_renew()
        pipe = self.redis.pipeline(transaction=False)
        for ref in watched:
            self._renew_watch(pipe, ref, deadline)
        if self._registered:
            pipe.zadd(self.keys.processes, {self.process_id: deadline})
            pipe.zremrangebyscore(self.keys.processes, "-inf", self._now_ms())
        for user_id in users:
            pipe.pexpire(self.keys.connections(user_id), CONNECTIONS_TTL_MS)
        pipe.execute()

    def _connection_keys_to_renew(self) -> list[Any]:
        """The users whose connection set was last renewed a third of its TTL ago
        (so a heartbeat costs a few commands, not one per connection)."""
        now = time.monotonic()
        connected = set(self._connections.values())
        for user_id in list(self._connection_keys_renewed):
            if user_id not in connected:
                del self._connection_keys_renewed[user_id]
        due = [
            user_id
            for user_id, renewed in self._connection_keys_renewed.items()
            if now - renewed > CONNECTIONS_TTL_MS / 3000
        ]
        for user_id in due:
            self._connection_keys_renewed[user_id] = now
        return due

    def _drain_releases(self) -> None:
        while True:
            try:
                ref = self._releases.get_nowait()
            except Empty:
                return
            # A client subscribed meanwhile renews the lease only after this (its read
            # takes the same lock): released after that renewal, the anchor would count
            # as unwatched while it is served, and be cleared or expired under it.
            with self._lease_lock:
                with self._watched_lock:
                    if ref in self._watched:
                        continue  # watched again meanwhile
                now = int(self._now_ms())
                live = self._release(
                    keys=[self.keys.meta(ref), self.keys.watch(ref)], args=[self.process_id, now]
                )
            spec = _registry.spec_by_id(ref[0])
            if spec is not None and spec.optimize_anchors and not live:
                # Meta.optimize_anchors: an anchor nobody watches is not kept up to date.
                with self._locked([ref]):
                    self._check_epoch()  # an anchor of a newer epoch is not garbage
                    if self._idleness(ref, 0, claim=True) is not _Idle.KEEP:
                        self._purge(ref)

    def expire(self, dry_run: bool = False) -> list[AnchorRef]:
        """Drop (or only list) the anchors idle past their channel's cache TTL.

        Idle means no process holds a live watch lease; the idle time starts when
        the last watcher left or, for a process that died, when its lease ran out.
        Anchors of an older epoch are garbage and expire too.
        """
        expired: list[AnchorRef] = []
        for spec in _registry.specs():
            ttl_ms = spec.cache_ttl_seconds() * 1000
            for ref in self._anchor_refs(spec.channel_id):
                verdict = self._idleness(ref, ttl_ms)
                if verdict is _Idle.EXPIRED:
                    expired.append(ref)
                if dry_run or verdict is _Idle.KEEP:
                    continue
                with self._locked([ref]):
                    self._check_epoch()  # an anchor of a newer epoch is not garbage
                    if self._idleness(ref, ttl_ms, claim=True) is not _Idle.KEEP:
                        self._purge(ref)
                        self.redis.delete(self.keys.watch(ref))
        return expired

    def _idleness(self, ref: AnchorRef, ttl_ms: float, claim: bool = False) -> _Idle:
        """Whether ``ref`` may be dropped; with ``claim``, a droppable anchor stops being
        served in the same step (atomic with a client's lease: see IDLENESS_SCRIPT)."""
        verdict = self._idle_check(
            keys=[self.keys.meta(ref), self.keys.watch(ref)],
            args=[self.epoch, self._now_ms(), ttl_ms, "1" if claim else "0"],
        )
        return _Idle(verdict.decode() if isinstance(verdict, bytes) else verdict)


class _Idle(Enum):
    KEEP = "keep"
    EXPIRED = "expired"
    #: Left by a loader that died; removed without being reported as an expiry.
    DEBRIS = "debris"


def _sweep_interval() -> float:
    """Seconds between expiry sweeps: a quarter of the shortest TTL, at most a minute."""
    ttls = [spec.cache_ttl_seconds() for spec in _registry.specs()]
    shortest = min(ttls, default=float(rx_settings.RX_CACHE_TTL))
    return max(0.05, min(60.0, shortest / 4))
