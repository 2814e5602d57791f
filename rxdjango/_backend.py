"""The embedded backend: in-process cache plus in-process fan-out.

It is what runs with no settings: one process, state cached in memory,
changes delivered to the connections of that process. Every method here is
synchronous ORM-safe code; the consumer calls them through
``database_sync_to_async``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._cache import AnchorCache, AnchorRef, AnchorStatus, MemoryCache
from ._hub import Hub, Subscriber, hub
from ._loader import FlatRecord, load_subtrees
from ._propagation import Propagator
from .conf import rx_settings

if TYPE_CHECKING:
    from .channels import ContextChannel

__all__ = ["Backend", "EmbeddedBackend", "Snapshot", "get_backend", "reset_backend"]

#: Seconds a loader may take before another client may take over the load.
LOAD_LEASE_SECONDS = 60.0


@dataclass
class Snapshot:
    """An anchor's records at ``tstamp``."""

    records: list[FlatRecord]
    tstamp: float


class Backend(Protocol):
    """What the consumer and the change buffer need from a cache-and-fan-out backend.

    Every method is synchronous ORM-safe code except where noted.
    """

    loads: int

    def clock(self) -> float:
        """Server time for ``_tstamp``, shared by every process of the deployment."""

    def process(
        self,
        channel: type[ContextChannel],
        touched: dict[str, set[Any]],
        only: AnchorRef | None = None,
    ) -> None:
        """Propagate committed changes ({instance type: pks}) to cached anchors."""

    def snapshot(self, channel: type[ContextChannel], anchor_pk: Any) -> Snapshot | None:
        """The anchor's records (loading them once if cold); None if it does not exist."""

    def subscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        """Deliver the anchor's future frames to ``subscriber`` (non-blocking)."""

    def unsubscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        """Stop delivering; the anchor's idle time starts when nobody watches it."""

    def clear(self, ref: AnchorRef) -> bool:
        """Drop a cached anchor; True if it was hot."""


class EmbeddedBackend:
    def __init__(self, fanout: Hub) -> None:
        self.cache = MemoryCache()
        self.hub = fanout
        self._propagators: dict[str, Propagator] = {}
        self._propagators_lock = threading.Lock()
        #: Number of anchor loads from the database (observable by tests and benchmarks).
        self.loads = 0

    @staticmethod
    def clock() -> float:
        return time.time()

    # -- changes ----------------------------------------------------------------

    def propagator(self, channel: type[ContextChannel]) -> Propagator:
        with self._propagators_lock:
            propagator = self._propagators.get(channel.channel_id)
            if propagator is None:
                propagator = Propagator(
                    channel.state_model(), channel.channel_id, self.cache, self._publish
                )
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
                if anchor.status is AnchorStatus.HEATING:
                    for instance_type, pks in touched.items():
                        anchor.journal.setdefault(instance_type, set()).update(pks)
            self.propagator(channel).apply(touched, self.clock(), only)

    def _publish(self, ref: AnchorRef, frame: str, owner: Any) -> None:
        self.hub.publish(ref, frame, owner)

    # -- loading ----------------------------------------------------------------

    def snapshot(self, channel: type[ContextChannel], anchor_pk: Any) -> Snapshot | None:
        """The anchor's records, loading them if no process has them cached.

        Returns None when the anchor row does not exist. Concurrent callers for a
        cold anchor wait for one loader; if it fails or its lease runs out,
        another caller loads instead of waiting forever.
        """
        ref: AnchorRef = (channel.channel_id, anchor_pk)
        state_model = channel.state_model()
        root = (state_model.root.instance_type, anchor_pk)
        while True:
            with self.cache.lock:
                self._expire_idle()
                anchor = self.cache.get(ref)
                if anchor is not None and anchor.status is AnchorStatus.HOT:
                    anchor.idle_since = None
                    return Snapshot(list(anchor.records.values()), self.clock())
                if anchor is not None and anchor.lease_until > time.monotonic():
                    wait = anchor.lease_until - time.monotonic()
                    waiting_on: AnchorCache | None = anchor
                else:
                    anchor = self.cache.begin_heating(ref, root, LOAD_LEASE_SECONDS)
                    waiting_on = None
            if waiting_on is not None:
                waiting_on.loaded.wait(wait)
                continue
            result = self._load(channel, anchor, ref)
            if result is not _RETRY:
                return result

    def _load(
        self, channel: type[ContextChannel], anchor: AnchorCache, ref: AnchorRef
    ) -> Snapshot | object | None:
        tstamp = self.clock()
        try:
            records = load_subtrees(channel.state_model(), [anchor.root], tstamp)
        except BaseException:
            with self.cache.lock:
                if self.cache.get(ref) is anchor:
                    self.cache.drop(ref)
            raise
        with self.cache.lock:
            if self.cache.get(ref) is not anchor:
                return _RETRY  # cleared or taken over meanwhile
            self.loads += 1
            if anchor.root not in records:
                self.cache.drop(ref)
                return None
            self.cache.put_many(anchor, records.values())
            anchor.status = AnchorStatus.HOT
            journal, anchor.journal = anchor.journal, {}
            anchor.loaded.set()
            if journal:
                # Changes committed while we read: replay them on the fresh cache.
                self.propagator(channel).apply(journal, self.clock(), only=ref)
            current = self.cache.get(ref)
            if current is None:
                return None
            return Snapshot(list(current.records.values()), self.clock())

    # -- subscriptions -------------------------------------------------------------

    def subscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self.hub.subscribe(ref, subscriber)

    def unsubscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self.hub.unsubscribe(ref, subscriber)
        if self.hub.count(ref) == 0:
            with self.cache.lock:
                anchor = self.cache.get(ref)
                if anchor is not None and anchor.idle_since is None:
                    anchor.idle_since = time.monotonic()

    def clear(self, ref: AnchorRef) -> bool:
        with self.cache.lock:
            anchor = self.cache.get(ref)
            if anchor is None or anchor.status is not AnchorStatus.HOT:
                return False
            self.cache.drop(ref)
            return True

    def _expire_idle(self) -> None:
        """Drop anchors nobody has watched for their channel's TTL (no cron needed)."""
        from .channels import ContextChannel

        now = time.monotonic()
        ttls = {c.channel_id: c.get_cache_ttl() for c in ContextChannel.get_registered_channels()}
        default_ttl = rx_settings.RX_CACHE_TTL
        for anchor in self.cache.idle_anchors():
            ttl = ttls.get(anchor.ref[0], default_ttl)
            if anchor.idle_since is not None and now - anchor.idle_since >= ttl:
                self.cache.drop(anchor.ref)


_RETRY = object()
_backend: EmbeddedBackend | None = None
_backend_lock = threading.Lock()


def get_backend() -> Backend:
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = EmbeddedBackend(hub)
        return _backend


def reset_backend() -> None:
    """Forget every cached anchor (used between tests)."""
    global _backend
    with _backend_lock:
        _backend = None
