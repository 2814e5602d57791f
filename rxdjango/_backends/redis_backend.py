"""The production backend: instance cache and fan-out on one Redis, many processes.

Selected when ``REDIS_URL`` is set. Every ASGI process (and every process
that commits changes: management commands, task workers) shares the cache;
a change is propagated once, by the process that committed it, and
published once per anchor.

Invariants:

* Propagation, the end of a load and dropping an anchor take the anchor's lock
  (:mod:`.redis_locks`), so records, history and frames of one anchor change in one
  order, and anchors never wait for each other.
* An anchor is hot only in the current *epoch* (:mod:`.redis_epochs`).
* Nothing counts watchers: each process keeps a lease per watched anchor,
  renewed by its heartbeat, so a crashed process stops counting by itself
  (:mod:`.redis_upkeep`).

This module holds propagation, dropping and reloading anchors, subscriptions and
publishing; loading is in :mod:`.redis_loading`, the key layout and its writes in
:mod:`.redis_store`, the Lua scripts in :mod:`.redis_scripts`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from queue import SimpleQueue
from typing import Any

import orjson
from django.utils.module_loading import import_string
from redis.exceptions import RedisError

from .. import _codec, _loader, _registry, _telemetry
from .._change import AnchorRef, FlatRecord
from .._hub import Hub, Subscriber, only_user
from .._propagation import OutOfScope, Propagator
from .._protocol import Envelope
from .._registry import ChannelSpec
from .._state_model import Key, pk_repr
from ..conf import rx_settings
from .base import read_anchor, settle
from .busy_anchors import BusyAnchors, Touched
from .redis_client import client_factory, is_cluster, publish_command
from .redis_epochs import Epochs
from .redis_fanout import Listener, envelope
from .redis_keys import Keys, key_field
from .redis_loading import JournalMark, Loading, journal_mark
from .redis_locks import AnchorLocks
from .redis_records import decode_record
from .redis_scripts import (
    ADMIT_SCRIPT,
    BEGIN_SCRIPT,
    CLOCK_SCRIPT,
    EPOCH_SCRIPT,
    HISTORY_SCRIPT,
    IDLENESS_SCRIPT,
    LEASE_SCRIPT,
    RELEASE_SCRIPT,
)
from .redis_store import RedisStore
from .redis_upkeep import Upkeep, _Idle

__all__ = ["RedisBackend", "redis_backend"]

logger = logging.getLogger("rxdjango")

#: Change batches kept per channel for loaders to replay.
JOURNAL_SIZE = 10_000


class _ApplyFailed(Exception):
    """A propagation failed while changing anchors (not on Redis): they reload."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class RedisBackend(Epochs, Loading, Upkeep):
    """Cache, loading, expiry and fan-out for a deployment of many processes."""

    spans_processes = True

    def __init__(self, fanout: Hub, connect: Callable[[], Any], where: str) -> None:
        self.hub = fanout
        self.where = where
        self.keys = Keys(str(rx_settings.RX_REDIS_PREFIX))
        self.redis = connect()
        self.cluster = is_cluster(self.redis)
        self._publish_command = publish_command(self.redis)
        self.process_id = uuid.uuid4().hex
        #: Anchor loads from the database done by this process.
        self.loads = 0
        self._clock = self.redis.register_script(CLOCK_SCRIPT)
        self._epoch_script = self.redis.register_script(EPOCH_SCRIPT)
        self._begin = self.redis.register_script(BEGIN_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)
        self._idle_check = self.redis.register_script(IDLENESS_SCRIPT)
        self._remember = self.redis.register_script(HISTORY_SCRIPT)
        self._admit = self.redis.register_script(ADMIT_SCRIPT)
        self._lease = self.redis.register_script(LEASE_SCRIPT)
        self._locks = AnchorLocks(self.redis)
        self.busy_anchors = BusyAnchors()
        #: connection id -> user id, for the connections this process serves
        self._connections: dict[str, Any] = {}
        #: user id -> when this process last renewed the TTL of the user's connection set
        self._connection_keys_renewed: dict[Any, float] = {}
        #: this process is in the live-process set (its heartbeat keeps it there)
        self._registered = False
        self._watched: set[AnchorRef] = set()
        self._watched_lock = threading.Lock()
        #: Orders releasing a watch lease against renewing it for a client being served
        #: (never held by an event loop: both happen in worker threads).
        self._lease_lock = threading.Lock()
        self._releases: SimpleQueue[AnchorRef] = SimpleQueue()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._needs_new_epoch = False
        self._offset_ms = 0.0
        self.epoch = ""
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="rxdjango-publish")
        self.listener = Listener(
            connect,
            self.keys,
            fanout,
            self._on_control,
            self._on_disconnect,
            self._on_reconnect,
            shard_channels=self._channel_feeds if self.cluster else None,
        )
        #: Connections open when pub/sub was lost: they may miss frames, so they reload.
        self._cut_off: set[Subscriber] = set()
        self._maintenance = threading.Thread(
            target=self._maintain, name="rxdjango-redis-maintenance", daemon=True
        )
        self._threads_started = False
        self._threads_lock = threading.Lock()

    def _channel_feeds(self) -> list[str]:
        """The pub/sub channel of every registered channel (a cluster subscribes each)."""
        return [self.keys.pub(spec.channel_id) for spec in _registry.specs()]

    def _serve(self) -> None:
        """Start listening and maintaining: only a process that serves clients needs to
        (one that only commits changes, like a management command, publishes)."""
        with self._threads_lock:
            if not self._threads_started:
                self._threads_started = True
                self.listener.start()
        self._serve_maintenance()

    def _serve_maintenance(self) -> None:
        with self._threads_lock:
            if not self._maintenance.is_alive() and not self._stopped.is_set():
                self._maintenance.start()
                atexit.register(self._last_chance)

    def _locked(self, refs: Iterable[AnchorRef], wait: bool = True) -> AbstractContextManager[bool]:
        return self._locks.held([self.keys.lock(ref) for ref in refs], wait)

    def _store(self) -> RedisStore:
        """A store on the current epoch (cheap: the scripts are registered once)."""
        return RedisStore(self.redis, self.keys, self.epoch, envelope, self._remember)

    def _propagator(self, channel: ChannelSpec) -> Propagator:
        store = self._store()
        return Propagator(channel.state_model(), channel.channel_id, store, _loader.ORM_RECORDS)

    # -- changes ----------------------------------------------------------------------

    def process(
        self,
        channel: ChannelSpec,
        touched: dict[str, set[Any]],
        only: AnchorRef | None = None,
    ) -> None:
        """Propagate a committed batch to the channel's hot anchors, in any process.

        The batch is journaled first, then the anchors it reaches are locked and
        changed: a loader makes its anchor findable before it reads the journal, so a
        change is either replayed by the loader or finds the anchor hot. Changes to
        other anchors run meanwhile, in this process and in others.
        """
        channel_id = channel.channel_id
        if self._needs_new_epoch:
            self._start_new_epoch()
        reached: set[AnchorRef] = set()
        try:
            # Journaled in the step that asks whether anything of the channel is cached
            # or loading: a loader that begins later reads the database after this commit.
            encoded = {kind: sorted(pks, key=repr) for kind, pks in touched.items()}
            journal = self.keys.journal(channel_id)
            tx = self.redis.pipeline(transaction=True)
            tx.scard(self.keys.anchors(channel_id))
            entry = {"t": _codec.encode_bytes(encoded)}
            tx.xadd(journal, entry, maxlen=JOURNAL_SIZE, approximate=True)
            tx.xinfo_stream(journal)
            cached, _, info = tx.execute()
            if not cached:
                return  # nothing cached, nothing loading: nobody to tell
            mark = journal_mark(info)  # what changes after this one follow
            while True:
                # Anchors are found hot only in this process's epoch: adopt the current one
                # first, and start over if it changed while the groups were applied.
                self._check_epoch()
                epoch = self.epoch

                def apply(
                    changes: Callable[[], Touched], scope: set[AnchorRef], wait: bool
                ) -> bool:
                    while True:
                        try:
                            return self._apply_locked(channel, changes, only, scope, mark, wait)
                        except OutOfScope as wider:
                            scope |= wider.refs  # moved into another anchor: lock it too
                        finally:
                            reached.update(scope)

                # Groups reaching disjoint anchors, each under its anchors' locks alone: a
                # slow anchor in a batch does not hold up the others.
                groups = self._propagator(channel).partition(touched, only)
                self.busy_anchors.apply(groups, apply, only)
                if self.epoch == epoch:
                    return
        except _ApplyFailed as failed:
            # Which anchors missed the change is unknown past the failure: every anchor
            # of the channel reloads.
            self._recover(reached | set(self._anchor_refs(channel_id)))
            raise failed.error from None
        except Exception as failure:
            if isinstance(failure, RedisError):
                _telemetry.redis_errors.inc()
            # The cache may now miss this change: as soon as Redis answers, a new epoch
            # makes every client reload.
            self._needs_new_epoch = True
            self._start_new_epoch()
            raise

    def _apply_locked(
        self,
        channel: ChannelSpec,
        changes_of_batch: Callable[[], Touched],
        only: AnchorRef | None,
        scope: set[AnchorRef],
        mark: JournalMark,
        wait: bool = True,
    ) -> bool:
        """Apply the batch to the anchors of ``scope``, their locks held, then what
        the journal gained after ``mark`` (the batch's own entry) on the rows it read.
        False (nothing done) if one of them is busy and ``wait`` is not set."""
        with self._locked(scope, wait) as got:
            if not got:
                return False
            self._check_epoch()
            changes = self._changes_after(channel.channel_id, mark)
            propagator = self._propagator(channel)
            try:
                batch = changes_of_batch()
                settle(channel, propagator, batch, self.clock, changes, only, scope)
            except (OutOfScope, RedisError):
                raise
            except Exception as error:
                raise _ApplyFailed(error) from error
        return True

    def _recover(self, refs: set[AnchorRef]) -> None:
        """Propagation failed midway: drop ``refs`` and close their clients with 4408
        (they reconnect and reload with resync)."""
        for ref in sorted(refs, key=repr):
            with self._locked([ref]):
                self._purge(ref)
                self._close_clients(ref)

    # -- loading ------------------------------------------------------------------------

    def _purge(self, ref: AnchorRef) -> None:
        """Forget the anchor's keys and index entries (its lock held)."""
        self._store().purge(ref)

    def _anchor_refs(self, channel_id: str) -> list[AnchorRef]:
        members = self.redis.smembers(self.keys.anchors(channel_id))
        return [(channel_id, orjson.loads(m)) for m in members]

    def clear(self, ref: AnchorRef) -> bool:
        """Drop a hot anchor; if clients watch it anywhere, reload it and send them the
        difference. A load in progress is invalidated (its clients get fresh data)."""
        self._ready()
        channel = _registry.spec_by_id(ref[0])
        if channel is None:
            return False
        with self._locked([ref]):
            # Again under the lock: a new epoch may have been started while it waited,
            # and an anchor hot in it must not look stale to this process.
            self._check_epoch()
            status, epoch = self.redis.hmget(self.keys.meta(ref), "status", "epoch")
            hot = status == b"hot" and epoch is not None and epoch.decode() == self.epoch
            if not hot:
                if status is not None:
                    self._purge(ref)
                return False
            # Unwatched: stop serving it in the step that checks (as the expiry sweep
            # does), so a client served meanwhile either holds a lease first (and the
            # anchor is reloaded for it below) or finds it no longer hot and loads it.
            # Checked and purged apart, a client served in between streamed an anchor
            # being deleted and was never updated again.
            if self._idleness(ref, 0, claim=True) is not _Idle.KEEP:
                self._purge(ref)
                return True
            # Clients hold the cached state: reload it and send them the difference.
            # Changes propagated meanwhile reach them as usual and are replayed after.
            mark = self._journal_position(ref[0])
        root = (channel.state_model().root.instance_type, ref[1])
        fresh = read_anchor(channel, root, self.clock())
        with self._locked([ref]):
            propagator = self._propagator(channel)
            view = propagator.store.open([ref]).get(ref)
            if view is not None:
                propagator.replace_all(view, fresh, self.clock())
                if not self._replay(channel, ref, mark):
                    self._close_clients(ref)  # they reconnect and load it again
        return True

    def _watched_anywhere(self, ref: AnchorRef) -> bool:
        return bool(self.redis.zcount(self.keys.watch(ref), self._now_ms(), "+inf"))

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self._serve()
        self.hub.subscribe(ref, subscriber)
        with self._watched_lock:
            self._watched.add(ref)

    def unsubscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self.hub.unsubscribe(ref, subscriber)
        if self.hub.count(ref) > 0:
            return
        with self._watched_lock:
            self._watched.discard(ref)
        self._releases.put(ref)
        self._wake.set()

    def register(self, channel_id: str, subscriber: Subscriber) -> None:
        self._serve()
        self.hub.register(channel_id, subscriber)

    def unregister(self, channel_id: str, subscriber: Subscriber) -> None:
        self.hub.unregister(channel_id, subscriber)

    def notify(self, ref: AnchorRef, frame: str, user_id: Any = None) -> None:
        target = None if user_id is None else only_user(pk_repr(user_id))
        message = envelope(Envelope.FRAME, ref[1], frame, target=target)
        self._publish(self.keys.pub(ref[0]), message)

    def broadcast_all(self, frame: str) -> None:
        self._publish(self.keys.control, envelope(Envelope.ALL, None, frame))

    def lease(self, name: str, holder: str, seconds: float) -> bool:
        ttl_ms = max(1, int(seconds * 1000))
        return bool(self._lease(keys=[self.keys.lease(name)], args=[holder, ttl_ms]))

    def revoke(
        self, user_id: Any, code: int, channel_id: str | None = None, anchor: Any = None
    ) -> None:
        """Every process closes the user's sockets (this one included, through Redis)."""
        payload = _codec.encode_bytes({"u": user_id, "c": channel_id, "code": code})
        self._publish(self.keys.control, envelope(Envelope.REVOKE, anchor, payload))

    def _publish(self, channel: str, message: bytes) -> None:
        """Publish without blocking an event loop (from async code it is handed off)."""
        self._submit(self.publish_message, channel, message)

    def _submit(self, command: Callable[..., Any], *args: Any) -> None:
        """Run a Redis command now, or from an event loop in the background (logged)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            command(*args)
        else:
            self._publisher.submit(self._logged, command, *args)

    @staticmethod
    def _logged(command: Callable[..., Any], *args: Any) -> None:
        try:
            command(*args)
        except RedisError:
            _telemetry.redis_errors.inc()
            logger.exception("rxdjango: Redis command failed in the background")

    def offer_created(self, channel: ChannelSpec, pks: set[Any]) -> None:
        model = channel.state_model().anchor_model
        existing = sorted(model._default_manager.filter(pk__in=pks).values_list("pk", flat=True))
        if existing:
            payload = _codec.encode_bytes([pk_repr(pk) for pk in existing])
            self.publish_message(
                self.keys.pub(channel.channel_id), envelope(Envelope.OFFER, None, payload)
            )

    # -- inspection --------------------------------------------------------------------------

    def unready(self) -> str | None:
        self._serve()
        try:
            self.redis.ping()
        except RedisError:
            return "Redis is unreachable"
        if not self.listener.ready.is_set():
            return "not subscribed to Redis yet"
        return None

    def anchors_cached(self) -> int:
        return sum(
            int(self.redis.scard(self.keys.anchors(spec.channel_id))) for spec in _registry.specs()
        )

    def is_cached(self, ref: AnchorRef) -> bool:
        if not self.epoch:  # a process that has not served yet (a shell, a command)
            self._check_epoch()
        status, epoch = self.redis.hmget(self.keys.meta(ref), "status", "epoch")
        return status == b"hot" and epoch is not None and epoch.decode() == self.epoch

    def cached_record(self, ref: AnchorRef, key: Key) -> FlatRecord | None:
        if not self.is_cached(ref):
            return None
        raw = self.redis.hget(self.keys.rec(ref), key_field(key))
        return None if raw is None else decode_record(raw)

    def holders(self, key: Key) -> set[AnchorRef]:
        store = self._store()
        return store.anchors_containing([key]).get(key, set())

    def is_idle(self, ref: AnchorRef) -> bool:
        return self.is_cached(ref) and not self._watched_anywhere(ref)

    def local_watchers(self, ref: AnchorRef) -> int:
        return self.hub.count(ref)

    def forget_everything(self) -> None:
        """Delete every key under the prefix (tests flush their database between runs)."""
        batch = []
        for name in self.redis.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                self.redis.delete(*batch)
                batch = []
        if batch:
            self.redis.delete(*batch)

    def distrust_cache(self) -> None:
        """A new epoch: every process drops what it knew and closes its clients."""
        self._start_new_epoch()

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._threads_started:
            self.listener.stop()
        if self._maintenance.is_alive():
            self._maintenance.join(timeout=5)
        atexit.unregister(self._last_chance)
        self._locks.stop()
        self._publisher.shutdown(wait=True)
        self.redis.close()


def redis_backend(fanout: Hub) -> RedisBackend:
    """The backend for ``RX_REDIS_CLIENT`` (a factory of clients, e.g. through Sentinel)
    or else ``REDIS_URL``."""
    factory_path = rx_settings.RX_REDIS_CLIENT
    if factory_path:
        factory = import_string(str(factory_path))
        return RedisBackend(fanout, factory, str(factory_path))
    url = str(rx_settings.REDIS_URL)
    return RedisBackend(fanout, client_factory(url), url.split("@")[-1])
