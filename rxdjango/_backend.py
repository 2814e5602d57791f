"""The embedded backend: in-process cache plus in-process fan-out.

It is what runs with no settings: one process, state cached in memory,
changes delivered to the connections of that process. Every method here is
synchronous ORM-safe code; the consumer calls them through
``database_sync_to_async``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import _loader
from ._audience import assign_all
from ._cache import AnchorCache, AnchorStatus, MemoryCache, MemoryStore, MemoryView
from ._consistent_reads import consistent_reads
from ._hub import Hub, Subscriber, hub, only_user
from ._loader import FlatRecord
from ._propagation import AnchorRef, Change, Propagator
from ._protocol import CloseCode
from ._state_model import Key, pk_repr
from .conf import rx_settings

if TYPE_CHECKING:
    from .channels import ContextChannel

__all__ = [
    "Backend",
    "EmbeddedBackend",
    "HeldSnapshot",
    "Snapshot",
    "get_backend",
    "reset_backend",
]


@dataclass
class Snapshot:
    """What a (re)connecting client of an anchor needs, as of ``tstamp``.

    :meth:`records` yields the anchor's whole state, rendered per user by the
    consumer; with ``resync`` the client must first drop what it held for the
    anchor. A catch-up (``partial``) sends only what ``changes`` (the history since
    the client's ``lastUpdate``) says that client received something about.
    """

    root: Key
    tstamp: float
    partial: bool = False
    resync: bool = False
    changes: list[Change] = field(default_factory=list)

    def records(self) -> Iterator[FlatRecord]:
        """Every record, the anchor's own first, each once (may read from the cache's
        store as it goes: call it off the event loop)."""
        raise NotImplementedError

    def current(self, keys: Iterable[Key]) -> dict[Key, FlatRecord]:
        """The records of ``keys`` that the anchor holds."""
        raise NotImplementedError


@dataclass
class HeldSnapshot(Snapshot):
    """A snapshot of an anchor cached in this process's memory.

    Records are shared with the cache (a change replaces a record, never mutates it),
    so a snapshot costs a reference per record, not a copy of the anchor.
    """

    #: The anchor's own record first, then every other one.
    ordered: list[FlatRecord] = field(default_factory=list)
    #: For a catch-up: the changed records that still exist.
    changed: dict[Key, FlatRecord] = field(default_factory=dict)

    @classmethod
    def of(cls, records: dict[Key, FlatRecord], root: Key, tstamp: float) -> HeldSnapshot:
        """The whole anchor (call with the cache lock held: ``records`` changes later)."""
        first = records.get(root)
        rest = [record for key, record in records.items() if key != root]
        return cls(root, tstamp, ordered=rest if first is None else [first, *rest])

    def records(self) -> Iterator[FlatRecord]:
        return iter(self.ordered)

    def current(self, keys: Iterable[Key]) -> dict[Key, FlatRecord]:
        return {key: self.changed[key] for key in keys if key in self.changed}


class Backend(Protocol):
    """What the consumer and the change buffer need from a cache-and-fan-out backend.

    Every method is synchronous ORM-safe code except where noted.
    """

    loads: int
    #: Whether frames published here reach clients of other processes.
    spans_processes: bool

    def clock(self) -> float:
        """Server time for ``_tstamp``, shared by every process of the deployment."""

    def process(
        self,
        channel: type[ContextChannel],
        touched: dict[str, set[Any]],
        only: AnchorRef | None = None,
    ) -> None:
        """Propagate committed changes ({instance type: pks}) to cached anchors."""

    def snapshot(
        self, channel: type[ContextChannel], anchor_pk: Any, since: float | None = None
    ) -> Snapshot | None:
        """The anchor's records (loading them once if cold); None if it does not exist.

        With ``since`` (the client's ``lastUpdate``), only what changed since when
        the history proves it complete, else a full snapshot marked ``resync``.
        """

    def subscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        """Deliver the anchor's future frames to ``subscriber`` (non-blocking)."""

    def unsubscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        """Stop delivering; the anchor's idle time starts when nobody watches it."""

    def clear(self, ref: AnchorRef) -> bool:
        """Drop a cached anchor (reloading it for clients that watch it); True if it was hot."""

    def register(self, channel_id: str, subscriber: Subscriber) -> None:
        """An authenticated connection: it receives system messages and anchor offers."""

    def unregister(self, channel_id: str, subscriber: Subscriber) -> None: ...

    def notify(self, ref: AnchorRef, frame: str, user_id: Any = None) -> None:
        """Send ``frame`` to the anchor's clients (only ``user_id``'s, if given)."""

    def broadcast_all(self, frame: str) -> None:
        """Send ``frame`` to every connected client of every channel."""

    def revoke(
        self, user_id: Any, code: int, channel_id: str | None = None, anchor: Any = None
    ) -> None:
        """Close the user's sockets (of one channel, of one anchor) in every process."""

    def admit_connection(self, user_id: Any, connection_id: str) -> bool:
        """Count a connection of ``user_id`` in the deployment; False (not counted) when
        the user already has ``RX_MAX_CONNECTIONS_PER_USER``."""

    def release_connection(self, user_id: Any, connection_id: str) -> None:
        """The connection is gone (never blocks: may finish in the background)."""

    def offer_created(self, channel: type[ContextChannel], pks: set[Any]) -> None:
        """Committed new anchor rows, for list channels with ``auto_update``."""

    # -- inspection (tests, benchmarks, the expire command) -----------------------------

    def is_cached(self, ref: AnchorRef) -> bool:
        """Whether the anchor is hot in the cache."""

    def holders(self, key: Key) -> set[AnchorRef]:
        """The cached anchors that hold the record ``key``."""

    def cached_record(self, ref: AnchorRef, key: Key) -> FlatRecord | None:
        """The record ``key`` as the hot anchor ``ref`` holds it (None if it does not)."""

    def is_idle(self, ref: AnchorRef) -> bool:
        """Whether the anchor is hot and no client of any process watches it."""

    def local_watchers(self, ref: AnchorRef) -> int:
        """Connections of this process subscribed to the anchor."""

    def close(self) -> None:
        """Release connections and threads (tests switch backends)."""


class EmbeddedBackend:
    def __init__(self, fanout: Hub) -> None:
        self.cache = MemoryCache()
        self.hub = fanout
        self.store = MemoryStore(self.cache, fanout)
        self._propagators: dict[str, Propagator] = {}
        self._propagators_lock = threading.Lock()
        #: Number of anchor loads from the database (observable by tests and benchmarks).
        self.loads = 0
        self.spans_processes = False
        self._last_tstamp = 0.0
        self._clock_lock = threading.Lock()

    def clock(self) -> float:
        """Wall-clock seconds, strictly increasing in this process (catch-up relies on it)."""
        with self._clock_lock:
            self._last_tstamp = max(time.time(), self._last_tstamp + 1e-6)
            return self._last_tstamp

    # -- changes ----------------------------------------------------------------

    def propagator(self, channel: type[ContextChannel]) -> Propagator:
        with self._propagators_lock:
            propagator = self._propagators.get(channel.channel_id)
            if propagator is None:
                propagator = Propagator(channel.state_model(), channel.channel_id, self.store)
                self._propagators[channel.channel_id] = propagator
            return propagator

    def process(
        self,
        channel: type[ContextChannel],
        touched: dict[str, set[Any]],
        only: AnchorRef | None = None,
    ) -> None:
        """Propagate a committed batch of changes to ``channel``'s cached anchors."""
        with self.cache.lock:
            anchors = self.cache.anchors_of(channel.channel_id)
            if not anchors:
                return
            for anchor in anchors:
                anchor.note_changes(touched)  # for loads and reloads reading meanwhile
            try:
                with consistent_reads(channel.state_model().anchor_model):
                    self.propagator(channel).apply(touched, self.clock(), only)
            except Exception:
                self._recover(channel)
                raise

    def _recover(self, channel: type[ContextChannel]) -> None:
        """Propagation failed midway: no cached anchor of ``channel`` can be trusted.

        Drop them all and close their clients with 4408; they reconnect, reload and
        receive ``resync`` with the full state, so nothing is lost. Lock held.
        """
        for anchor in self.cache.anchors_of(channel.channel_id):
            self.cache.drop(anchor.ref)
            self.hub.close_topic(anchor.ref, CloseCode.TIMEOUT)

    # -- loading ----------------------------------------------------------------

    def snapshot(
        self, channel: type[ContextChannel], anchor_pk: Any, since: float | None = None
    ) -> Snapshot | None:
        """The anchor's records, loading them if no process has them cached.

        Returns None when the anchor row does not exist. Concurrent callers for a
        cold anchor wait for one loader; if it fails or its lease runs out,
        another caller loads instead of waiting forever.

        With ``since``, a single-instance channel gets only the changes since then
        when the anchor's history proves them complete; otherwise (history trimmed,
        anchor reloaded, list channel) a full snapshot marked ``resync``.
        """
        ref: AnchorRef = (channel.channel_id, anchor_pk)
        state_model = channel.state_model()
        root = (state_model.root.instance_type, anchor_pk)
        while True:
            with self.cache.lock:
                self._expire_idle()
                anchor = self.cache.get(ref)
                if anchor is not None and anchor.status is AnchorStatus.HOT:
                    self.cache.mark_watched(anchor)
                    return self._snapshot_of(channel, anchor, since)
                if anchor is not None and anchor.lease_until > time.monotonic():
                    wait = anchor.lease_until - time.monotonic()
                    waiting_on: AnchorCache | None = anchor
                else:
                    lease = float(rx_settings.RX_LOAD_TIMEOUT)
                    anchor = self.cache.begin_heating(ref, root, lease)
                    waiting_on = None
            if waiting_on is not None:
                waiting_on.loaded.wait(wait)
                continue
            result = self._load(channel, anchor, ref)
            if result is not _RETRY:
                if isinstance(result, Snapshot) and since is not None:
                    result.resync = True  # a fresh load proves nothing about the past
                return result

    def _load(
        self, channel: type[ContextChannel], anchor: AnchorCache, ref: AnchorRef
    ) -> Snapshot | object | None:
        """Read the heating ``anchor`` (its journal was opened when it began heating)."""
        journal = anchor.journals[0]
        tstamp = self.clock()
        anchor.complete_after = tstamp
        try:
            records = self._read_anchor(channel, anchor.root, tstamp)
        except BaseException:
            with self.cache.lock:
                if self.cache.get(ref) is anchor:
                    self.cache.drop(ref)
            raise
        with self.cache.lock:
            anchor.close_journal(journal)
            if self.cache.get(ref) is not anchor:
                return _RETRY  # cleared or taken over meanwhile
            self.loads += 1
            if anchor.root not in records:
                self.cache.drop(ref)
                return None
            assigned = assign_all(records, anchor.root, channel.state_model())
            self.cache.put_many(anchor, assigned.values())
            anchor.status = AnchorStatus.HOT
            anchor.loaded.set()
            self._replay(channel, anchor, journal)
            current = self.cache.get(ref)
            if current is None:
                return None
            return HeldSnapshot.of(current.records, current.root, self.clock())

    @staticmethod
    def _read_anchor(
        channel: type[ContextChannel], root: Key, tstamp: float
    ) -> dict[Key, FlatRecord]:
        """Every record of the anchor, as of one moment of the database."""
        state_model = channel.state_model()
        with consistent_reads(state_model.anchor_model):
            return _loader.load_subtrees(state_model, [root], tstamp)

    def _replay(
        self, channel: type[ContextChannel], anchor: AnchorCache, journal: dict[str, set[Any]]
    ) -> None:
        """Apply the changes propagated while ``anchor`` was read (cache lock held).

        The read saw the database as of a moment before them; re-reading them now
        brings the anchor to the present. If that fails the anchor cannot be
        trusted: it is dropped and its clients reload.
        """
        if not journal:
            return
        try:
            with consistent_reads(channel.state_model().anchor_model):
                self.propagator(channel).apply(journal, self.clock(), only=anchor.ref)
        except Exception:
            self.cache.drop(anchor.ref)
            self.hub.close_topic(anchor.ref, CloseCode.TIMEOUT)
            raise

    def _snapshot_of(
        self, channel: type[ContextChannel], anchor: AnchorCache, since: float | None
    ) -> Snapshot:
        """Full snapshot, or catch-up since ``since`` (call with the cache lock held)."""
        now = self.clock()
        changes = None if since is None or channel.many else anchor.changes_since(since)
        if changes is None:
            snapshot = HeldSnapshot.of(anchor.records, anchor.root, now)
            snapshot.resync = since is not None
            return snapshot
        changed = {
            key: anchor.records[key] for key in {c.key for c in changes} if key in anchor.records
        }
        return HeldSnapshot(anchor.root, now, partial=True, changes=changes, changed=changed)

    # -- subscriptions -------------------------------------------------------------

    def subscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self.hub.subscribe(ref, subscriber)

    def unsubscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self.hub.unsubscribe(ref, subscriber)
        if self.hub.count(ref) > 0:
            return
        with self.cache.lock:
            anchor = self.cache.get(ref)
            if anchor is None or anchor.status is not AnchorStatus.HOT:
                return
            if _optimized(ref[0]):
                # Meta.optimize_anchors: an anchor nobody watches is not kept up to date.
                self.cache.drop(ref)
            else:
                self.cache.mark_idle(anchor)

    def clear(self, ref: AnchorRef) -> bool:
        """Drop a hot anchor. If clients watch it, reload it and send them the difference.
        A load in progress is discarded and done again."""
        with self.cache.lock:
            anchor = self.cache.get(ref)
            if anchor is None:
                return False
            if anchor.status is not AnchorStatus.HOT:
                # A load in progress may have read rows from before the clear: its
                # loader finds the anchor gone and loads again.
                self.cache.drop(ref)
                return False
            if self.hub.count(ref) == 0:
                self.cache.drop(ref)
                return True
            # Clients hold the cached state: reload it and send them the difference.
            # Changes propagated meanwhile reach them as usual and are replayed after.
            journal = anchor.open_journal()
        from .channels import channel_by_id

        channel = channel_by_id(ref[0])
        assert channel is not None, "a cached anchor belongs to a registered channel"
        try:
            fresh = self._read_anchor(channel, anchor.root, self.clock())
        except BaseException:
            with self.cache.lock:
                anchor.close_journal(journal)
            raise
        with self.cache.lock:
            anchor.close_journal(journal)
            if self.cache.get(ref) is anchor:
                view = MemoryView(self.store, anchor)
                self.propagator(channel).replace_all(view, fresh, self.clock())
                self._replay(channel, anchor, journal)
        return True

    def register(self, channel_id: str, subscriber: Subscriber) -> None:
        self.hub.register(channel_id, subscriber)

    def unregister(self, channel_id: str, subscriber: Subscriber) -> None:
        self.hub.unregister(channel_id, subscriber)

    def notify(self, ref: AnchorRef, frame: str, user_id: Any = None) -> None:
        self.hub.publish(ref, frame, None if user_id is None else only_user(pk_repr(user_id)))

    def broadcast_all(self, frame: str) -> None:
        self.hub.publish_all(frame)

    def revoke(
        self, user_id: Any, code: int, channel_id: str | None = None, anchor: Any = None
    ) -> None:
        self.hub.close_user(user_id, code, channel_id, anchor)

    def admit_connection(self, user_id: Any, connection_id: str) -> bool:
        return self.hub.admit_user(user_id, rx_settings.RX_MAX_CONNECTIONS_PER_USER)

    def release_connection(self, user_id: Any, connection_id: str) -> None:
        self.hub.release_user(user_id)

    def offer_created(self, channel: type[ContextChannel], pks: set[Any]) -> None:
        if not self.hub.connection_count(channel.channel_id):
            return
        model = channel.state_model().anchor_model
        # Rows created in a rolled-back savepoint were noted too: offer only what exists.
        existing = sorted(model._default_manager.filter(pk__in=pks).values_list("pk", flat=True))
        if existing:
            self.hub.offer(channel.channel_id, [pk_repr(pk) for pk in existing])

    def is_cached(self, ref: AnchorRef) -> bool:
        with self.cache.lock:
            anchor = self.cache.get(ref)
            return anchor is not None and anchor.status is AnchorStatus.HOT

    def holders(self, key: Key) -> set[AnchorRef]:
        with self.cache.lock:
            return set(self.cache.anchors_containing(key))

    def cached_record(self, ref: AnchorRef, key: Key) -> FlatRecord | None:
        with self.cache.lock:
            anchor = self.cache.get(ref)
            if anchor is None or anchor.status is not AnchorStatus.HOT:
                return None
            return anchor.records.get(key)

    def is_idle(self, ref: AnchorRef) -> bool:
        with self.cache.lock:
            anchor = self.cache.get(ref)
            return anchor is not None and anchor.idle_since is not None

    def local_watchers(self, ref: AnchorRef) -> int:
        return self.hub.count(ref)

    def close(self) -> None:
        pass

    def _expire_idle(self) -> None:
        """Drop anchors nobody has watched for their channel's TTL (no cron needed)."""
        from .channels import channel_by_id

        now = time.monotonic()
        for anchor in self.cache.idle_anchors():
            channel = channel_by_id(anchor.ref[0])
            ttl = channel.get_cache_ttl() if channel is not None else rx_settings.RX_CACHE_TTL
            if anchor.idle_since is not None and now - anchor.idle_since >= ttl:
                self.cache.drop(anchor.ref)


def _optimized(channel_id: str) -> bool:
    from .channels import channel_by_id

    channel = channel_by_id(channel_id)
    return channel is not None and bool(getattr(channel.Meta, "optimize_anchors", False))


_RETRY = object()
_backend: Backend | None = None
_backend_lock = threading.Lock()


def get_backend() -> Backend:
    """The process's backend: Redis when ``REDIS_URL`` (or ``RX_REDIS_CLIENT``) is set,
    else the embedded one."""
    global _backend
    with _backend_lock:
        if _backend is None:
            if rx_settings.REDIS_URL or rx_settings.RX_REDIS_CLIENT:
                from ._redis_backend import redis_backend

                _backend = redis_backend(hub)
            else:
                _backend = EmbeddedBackend(hub)
        return _backend


def current_backend() -> Backend | None:
    """The backend if one was created (never creates one)."""
    return _backend


def reset_backend() -> None:
    """Forget this process's backend and its local cache (used between tests)."""
    global _backend
    with _backend_lock:
        if _backend is not None:
            _backend.close()
        _backend = None
