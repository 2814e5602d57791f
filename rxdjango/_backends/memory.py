"""The embedded backend: in-process cache plus in-process fan-out.

It is what runs with no settings: one process, state cached in memory,
changes delivered to the connections of that process. Every method here is
synchronous ORM-safe code; the consumer calls them through
``database_sync_to_async``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _loader, _registry
from .._audience import assign_all
from .._change import AnchorRef, FlatRecord
from .._hub import Hub, Subscriber, only_user
from .._propagation import OutOfScope, Propagator
from .._protocol import CloseCode
from .._registry import ChannelSpec
from .._state_model import Key, pk_repr
from ..conf import rx_settings
from .base import (
    RETRY,
    HeldSnapshot,
    Hot,
    Load,
    Snapshot,
    Wait,
    read_anchor,
    replay,
    serve_snapshot,
    settle,
)
from .busy_anchors import BusyAnchors, Touched
from .memory_cache import (
    AnchorCache,
    AnchorStatus,
    MemoryCache,
    MemoryStore,
    MemoryView,
    NotedChanges,
)
from .memory_locks import LocalAnchorLocks

__all__ = ["EmbeddedBackend"]


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
        #: Order the changes of each anchor (taken before :attr:`cache`'s lock).
        self.anchor_locks = LocalAnchorLocks()
        self.busy_anchors = BusyAnchors()

    def clock(self) -> float:
        """Wall-clock seconds, strictly increasing in this process (catch-up relies on it)."""
        with self._clock_lock:
            self._last_tstamp = max(time.time(), self._last_tstamp + 1e-6)
            return self._last_tstamp

    # -- changes ----------------------------------------------------------------

    def propagator(self, channel: ChannelSpec) -> Propagator:
        with self._propagators_lock:
            propagator = self._propagators.get(channel.channel_id)
            if propagator is None:
                propagator = Propagator(
                    channel.state_model(), channel.channel_id, self.store, _loader.ORM_RECORDS
                )
                self._propagators[channel.channel_id] = propagator
            return propagator

    def process(
        self,
        channel: ChannelSpec,
        touched: dict[str, set[Any]],
        only: AnchorRef | None = None,
    ) -> None:
        """Propagate a committed batch of changes to ``channel``'s cached anchors: those
        it reaches are locked and changed; changes to others run meanwhile."""
        with self.cache.lock:
            # Noted for the loads, reloads and propagations reading meanwhile.
            if not self.cache.note_changes(channel.channel_id, touched):
                return
        propagator = self.propagator(channel)

        def apply(changes: Callable[[], Touched], scope: set[AnchorRef], wait: bool) -> bool:
            while True:
                try:
                    with self.anchor_locks.held(scope, wait) as got:
                        if not got:
                            return False
                        with NotedChanges(self.cache, channel.channel_id) as noted:
                            settle(channel, propagator, changes(), self.clock, noted, only, scope)
                    return True
                except OutOfScope as wider:
                    scope |= wider.refs  # moved into another anchor meanwhile: lock it too

        try:
            # Groups reaching disjoint anchors, each under its anchors' locks alone: a
            # slow anchor in a batch does not hold up the others.
            self.busy_anchors.apply(propagator.partition(touched, only), apply, only)
        except Exception:
            with self.cache.lock:
                self._recover(channel)
            raise

    def _recover(self, channel: ChannelSpec) -> None:
        """Propagation failed midway: no cached anchor of ``channel`` can be trusted.

        Drop them all and close their clients with 4408; they reconnect, reload and
        receive ``resync`` with the full state, so nothing is lost. Lock held.
        """
        for anchor in self.cache.anchors_of(channel.channel_id):
            self.cache.drop(anchor.ref)
            self.hub.close_topic(anchor.ref, CloseCode.TIMEOUT)

    # -- loading ----------------------------------------------------------------

    def snapshot(
        self, channel: ChannelSpec, anchor_pk: Any, since: float | None = None
    ) -> Snapshot | None:
        """The anchor's records, loading them if they are not cached (one loader at a
        time: :func:`~.base.serve_snapshot`). None when the anchor row does not exist.

        With ``since``, a single-instance channel gets only the changes since then
        when the anchor's history proves them complete; otherwise (history trimmed,
        anchor reloaded, list channel) a full snapshot marked ``resync``.
        """
        ref: AnchorRef = (channel.channel_id, anchor_pk)
        root = (channel.state_model().root.instance_type, anchor_pk)

        def begin() -> Hot | Wait | Load:
            # The anchor's lock: a snapshot never shows a propagation half applied.
            with self.anchor_locks.held([ref]), self.cache.lock:
                self._expire_idle()
                anchor = self.cache.get(ref)
                if anchor is not None and anchor.status is AnchorStatus.HOT:
                    self.cache.mark_watched(anchor)
                    return Hot(self._snapshot_of(channel, anchor, since))
                if anchor is not None and anchor.lease_until > time.monotonic():
                    return Wait(anchor.lease_until - time.monotonic(), anchor.loaded)
                lease = float(rx_settings.RX_LOAD_TIMEOUT)
                return Load(self.cache.begin_heating(ref, root, lease))

        return serve_snapshot(begin, lambda anchor: self._load(channel, anchor, ref), since)

    def _load(self, channel: ChannelSpec, anchor: AnchorCache, ref: AnchorRef) -> object:
        """Read the heating ``anchor`` (its journal was opened when it began heating):
        True once hot, None if its row does not exist, ``RETRY`` if it was cleared."""
        journal = anchor.journals[0]
        tstamp = self.clock()
        anchor.complete_after = tstamp
        try:
            records = read_anchor(channel, anchor.root, tstamp)
        except BaseException:
            with self.cache.lock:
                if self.cache.get(ref) is anchor:
                    self.cache.drop(ref)
            raise
        with self.anchor_locks.held([ref]):
            with self.cache.lock:
                anchor.close_journal(journal)
                if self.cache.get(ref) is not anchor:
                    return RETRY  # cleared or taken over meanwhile
                self.loads += 1
                if anchor.root not in records:
                    self.cache.drop(ref)
                    return None
                assigned = assign_all(records, anchor.root, channel.state_model())
                self.cache.put_many(anchor, assigned.values())
                anchor.status = AnchorStatus.HOT
                # From the journal's end on, changes are noted for the replay.
                noted = NotedChanges(self.cache, channel.channel_id)
            # Hot: a change propagated from now on waits for this anchor's lock, and
            # finds the changes noted while it loaded replayed.
            with noted:
                self._replay(channel, anchor, journal, noted)
            anchor.loaded.set()
        return True

    def _replay(
        self,
        channel: ChannelSpec,
        anchor: AnchorCache,
        journal: dict[str, set[Any]],
        noted: NotedChanges,
    ) -> None:
        """Bring a just-(re)loaded anchor to the present (its anchor lock held)."""

        def distrust() -> None:
            with self.cache.lock:
                self.cache.drop(anchor.ref)
            self.hub.close_topic(anchor.ref, CloseCode.TIMEOUT)

        propagator = self.propagator(channel)
        replay(channel, propagator, journal, self.clock, anchor.ref, distrust, noted)

    def _snapshot_of(
        self, channel: ChannelSpec, anchor: AnchorCache, since: float | None
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
        channel = _registry.spec_by_id(ref[0])
        assert channel is not None, "a cached anchor belongs to a registered channel"
        try:
            fresh = read_anchor(channel, anchor.root, self.clock())
        except BaseException:
            with self.cache.lock:
                anchor.close_journal(journal)
            raise
        with self.anchor_locks.held([ref]):
            with self.cache.lock:
                anchor.close_journal(journal)
                if self.cache.get(ref) is not anchor:
                    return True
                noted = NotedChanges(self.cache, channel.channel_id)
            with noted:
                view = MemoryView(self.store, anchor)
                self.propagator(channel).replace_all(view, fresh, self.clock())
                self._replay(channel, anchor, journal, noted)
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

    def lease(self, name: str, holder: str, seconds: float) -> bool:
        return True  # one process: it holds every lease

    def admit_connection(self, user_id: Any, connection_id: str) -> bool:
        return self.hub.admit_user(user_id, rx_settings.RX_MAX_CONNECTIONS_PER_USER)

    def release_connection(self, user_id: Any, connection_id: str) -> None:
        self.hub.release_user(user_id)

    def offer_created(self, channel: ChannelSpec, pks: set[Any]) -> None:
        if not self.hub.connection_count(channel.channel_id):
            return
        model = channel.state_model().anchor_model
        # Rows created in a rolled-back savepoint were noted too: offer only what exists.
        existing = sorted(model._default_manager.filter(pk__in=pks).values_list("pk", flat=True))
        if existing:
            self.hub.offer(channel.channel_id, [pk_repr(pk) for pk in existing])

    def anchors_cached(self) -> int:
        with self.cache.lock:
            return len(self.cache.all_anchors())

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

    def unready(self) -> str | None:
        return None  # all in this process's memory: nothing to reach

    def forget_everything(self) -> None:
        with self.cache.lock:
            for anchor in list(self.cache.all_anchors()):
                self.cache.drop(anchor.ref)

    def distrust_cache(self) -> None:
        with self.cache.lock:
            for anchor in list(self.cache.all_anchors()):
                self.cache.drop(anchor.ref)
        self.hub.close_all(CloseCode.TIMEOUT)

    def expire(self, dry_run: bool = False) -> list[AnchorRef]:
        with self.cache.lock:
            return self._expire_idle(dry_run)

    def close(self) -> None:
        pass

    def _expire_idle(self, dry_run: bool = False) -> list[AnchorRef]:
        """Drop anchors nobody has watched for their channel's TTL (no cron needed:
        called on every snapshot; cache lock held)."""
        now = time.monotonic()
        expired = []
        for anchor in self.cache.idle_anchors():
            spec = _registry.spec_by_id(anchor.ref[0])
            ttl = spec.cache_ttl_seconds() if spec is not None else rx_settings.RX_CACHE_TTL
            if anchor.idle_since is not None and now - anchor.idle_since >= ttl:
                expired.append(anchor.ref)
                if not dry_run:
                    self.cache.drop(anchor.ref)
        return expired


def _optimized(channel_id: str) -> bool:
    spec = _registry.spec_by_id(channel_id)
    return spec is not None and spec.optimize_anchors
