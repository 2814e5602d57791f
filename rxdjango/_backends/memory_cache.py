"""The embedded (in-process, in-memory) instance cache.

Per anchor it keeps the flat records of the anchor's state, who references
whom, and the anchor's cache status. Across anchors it keeps an index from a
record key to the anchors that hold it, which is how a change finds the
anchors it affects without querying the database.

Concurrency: every method of :class:`MemoryCache` must be called with its
:attr:`~MemoryCache.lock` held (it is reentrant), and a view's changes hold it for
each step. What orders the changes of one anchor, so that its clients see them in
the order the cache applied them, is the anchor's own lock
(:mod:`.memory_locks`): a propagation holds it from reading the changed rows to
publishing, and so do the load and the reload that end by replaying changes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, cast

from .._change import AnchorRef, Change, FlatRecord, Retained
from .._hub import Target
from .._propagation import AnchorView, Emission
from .._state_model import Key
from ..conf import rx_settings

__all__ = ["AnchorCache", "AnchorStatus", "MemoryCache", "MemoryStore", "Publisher"]


class AnchorStatus(StrEnum):
    COLD = "cold"  # not cached
    HEATING = "heating"  # one loader is reading it from the database
    HOT = "hot"  # cached and kept up to date by every change


@dataclass(eq=False)
class AnchorCache:
    """The cached state of one anchor."""

    ref: AnchorRef
    root: Key
    status: AnchorStatus = AnchorStatus.HEATING
    records: dict[Key, FlatRecord] = field(default_factory=dict)
    referrers: dict[Key, set[Key]] = field(default_factory=dict)
    #: Open journals: the keys of changes propagated while a load or a reload reads
    #: the anchor from the database, one journal per read; each is replayed when its
    #: read lands (the read saw the database as of one earlier moment).
    journals: list[dict[str, set[Any]]] = field(default_factory=list)
    #: Monotonic deadline of the current loader's lease (HEATING only).
    lease_until: float = 0.0
    loaded: threading.Event = field(default_factory=threading.Event)
    idle_since: float | None = None
    #: Recent changes, oldest first; complete for every change after ``complete_after``.
    history: deque[Change] = field(default_factory=deque)
    complete_after: float = 0.0

    def open_journal(self) -> dict[str, set[Any]]:
        journal: dict[str, set[Any]] = {}
        self.journals.append(journal)
        return journal

    def close_journal(self, journal: dict[str, set[Any]]) -> None:
        self.journals = [j for j in self.journals if j is not journal]

    def note_changes(self, touched: dict[str, set[Any]]) -> None:
        """Record a propagated change in every open journal."""
        for journal in self.journals:
            for instance_type, pks in touched.items():
                journal.setdefault(instance_type, set()).update(pks)

    def remember(self, changes: Iterable[Change], limit: int) -> None:
        """Append to the history, forgetting the oldest beyond ``limit`` entries."""
        self.history.extend(changes)
        while len(self.history) > limit:
            self.complete_after = max(self.complete_after, self.history.popleft().tstamp)

    def changes_since(self, since: float) -> list[Change] | None:
        """Changes at or after ``since``; None if the history cannot prove completeness."""
        return changes_since(self.history, self.complete_after, since)


def changes_since(
    history: Iterable[Change], complete_after: float, since: float
) -> list[Change] | None:
    """Changes at or after ``since``; None if a history complete only after
    ``complete_after`` cannot prove it holds all of them."""
    if since <= complete_after:
        return None
    return [change for change in history if change.tstamp >= since]


class MemoryCache:
    """Anchors of every channel in this process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._anchors: dict[AnchorRef, AnchorCache] = {}
        self._index: dict[Key, set[AnchorRef]] = {}
        self._by_channel: dict[str, set[AnchorRef]] = {}
        self._idle: set[AnchorRef] = set()
        #: Per channel, the journals of the propagations now reading and writing its
        #: anchors (:class:`NotedChanges`).
        self._noting: dict[str, list[dict[str, set[Any]]]] = {}

    # -- anchors ----------------------------------------------------------------

    def get(self, ref: AnchorRef) -> AnchorCache | None:
        return self._anchors.get(ref)

    def anchors_of(self, channel_id: str) -> list[AnchorCache]:
        return [self._anchors[ref] for ref in self._by_channel.get(channel_id, ())]

    def all_anchors(self) -> list[AnchorCache]:
        return list(self._anchors.values())

    def note_changes(self, channel_id: str, touched: dict[str, set[Any]]) -> bool:
        """Note a committed change for the loads, reloads and propagations of the
        channel under way; False if nothing of the channel is cached."""
        anchors = self.anchors_of(channel_id)
        for anchor in anchors:
            anchor.note_changes(touched)
        for journal in self._noting.get(channel_id, ()):
            for instance_type, pks in touched.items():
                journal.setdefault(instance_type, set()).update(pks)
        return bool(anchors)

    def idle_anchors(self) -> list[AnchorCache]:
        return [self._anchors[ref] for ref in self._idle if ref in self._anchors]

    def mark_idle(self, anchor: AnchorCache) -> None:
        """Nobody watches ``anchor`` any more: its TTL starts now."""
        if anchor.idle_since is None:
            anchor.idle_since = time.monotonic()
            self._idle.add(anchor.ref)

    def mark_watched(self, anchor: AnchorCache) -> None:
        anchor.idle_since = None
        self._idle.discard(anchor.ref)

    def begin_heating(self, ref: AnchorRef, root: Key, lease_seconds: float) -> AnchorCache:
        anchor = AnchorCache(ref=ref, root=root, lease_until=time.monotonic() + lease_seconds)
        anchor.open_journal()  # changes propagated while it loads are replayed after
        self._drop_entries(ref)
        self._idle.discard(ref)
        self._anchors[ref] = anchor
        self._by_channel.setdefault(ref[0], set()).add(ref)
        return anchor

    def drop(self, ref: AnchorRef) -> None:
        """Forget an anchor; a later client loads it again."""
        self._drop_entries(ref)
        anchor = self._anchors.pop(ref, None)
        self._idle.discard(ref)
        refs = self._by_channel.get(ref[0])
        if refs is not None:
            refs.discard(ref)
        if anchor is not None:
            anchor.loaded.set()

    def _drop_entries(self, ref: AnchorRef) -> None:
        anchor = self._anchors.get(ref)
        if anchor is None:
            return
        for key in anchor.records:
            self._unindex(key, ref)

    # -- records ----------------------------------------------------------------

    def anchors_containing(self, key: Key) -> set[AnchorRef]:
        return self._index.get(key, set())

    def anchors_containing_many(self, keys: Iterable[Key]) -> dict[Key, set[AnchorRef]]:
        return {key: set(self._index[key]) for key in keys if key in self._index}

    def put(self, anchor: AnchorCache, record: FlatRecord) -> FlatRecord | None:
        """Store ``record`` in ``anchor``; returns the record it replaced."""
        previous = anchor.records.get(record.key)
        if previous is not None:
            self._unlink(anchor, previous)
        anchor.records[record.key] = record
        for ref in record.refs:
            anchor.referrers.setdefault(ref, set()).add(record.key)
        if self._anchors.get(anchor.ref) is anchor:  # not dropped under its propagation
            self._index.setdefault(record.key, set()).add(anchor.ref)
        return previous

    def remove(self, anchor: AnchorCache, key: Key) -> FlatRecord | None:
        record = anchor.records.pop(key, None)
        if record is not None:
            self._unlink(anchor, record)
            if self._anchors.get(anchor.ref) is anchor:
                self._unindex(key, anchor.ref)
        return record

    def put_many(self, anchor: AnchorCache, records: Iterable[FlatRecord]) -> None:
        for record in records:
            self.put(anchor, record)

    def _unlink(self, anchor: AnchorCache, record: FlatRecord) -> None:
        for ref in record.refs:
            holders = anchor.referrers.get(ref)
            if holders is not None:
                holders.discard(record.key)
                if not holders:
                    del anchor.referrers[ref]

    def _unindex(self, key: Key, ref: AnchorRef) -> None:
        holders = self._index.get(key)
        if holders is not None:
            holders.discard(ref)
            if not holders:
                del self._index[key]


class Publisher(Protocol):
    """Where a memory store's frames go (the in-process hub)."""

    def publish(
        self,
        topic: AnchorRef,
        frame: str,
        target: Target | None = None,
        retained: Retained | None = None,
    ) -> int: ...

    def anchor_gone(self, topic: AnchorRef) -> None: ...


class NotedChanges:
    """The changes of one channel committed while a propagation (or the replay that
    ends a load) reads and writes its anchors: what :func:`~.base.settle` reads again.
    Calling it returns those noted since the last call."""

    def __init__(self, cache: MemoryCache, channel_id: str) -> None:
        self.cache = cache
        self.channel_id = channel_id
        self.journal: dict[str, set[Any]] = {}
        with cache.lock:
            cache._noting.setdefault(channel_id, []).append(self.journal)

    def __call__(self) -> dict[str, set[Any]]:
        with self.cache.lock:
            noted = {instance_type: set(pks) for instance_type, pks in self.journal.items()}
            self.journal.clear()
        return noted

    def __enter__(self) -> NotedChanges:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.cache.lock:
            journals = self.cache._noting.get(self.channel_id, [])
            journals[:] = [j for j in journals if j is not self.journal]
            if not journals:
                self.cache._noting.pop(self.channel_id, None)


class MemoryStore:
    """The :class:`~rxdjango._propagation.AnchorStore` of the embedded backend."""

    def __init__(self, cache: MemoryCache, publisher: Publisher) -> None:
        self.cache = cache
        self.publisher = publisher

    def anchors_containing(self, keys: Iterable[Key]) -> dict[Key, set[AnchorRef]]:
        with self.cache.lock:
            return self.cache.anchors_containing_many(keys)

    def open(self, refs: Collection[AnchorRef], locked: bool = True) -> dict[AnchorRef, MemoryView]:
        with self.cache.lock:
            return {
                ref: MemoryView(self, anchor)
                for ref in refs
                if (anchor := self.cache.get(ref)) is not None and anchor.status is AnchorStatus.HOT
            }

    def prefetch(self, wanted: Iterable[tuple[AnchorView, Iterable[Key]]]) -> None:
        pass  # in memory already

    def save(self, views: Collection[AnchorView]) -> None:
        pass  # the index changes with each put

    def emit(self, emissions: list[Emission]) -> None:
        for emission in emissions:
            if emission.frames or emission.changes:
                view = cast(MemoryView, emission.view)
                view.emit(emission.frames, emission.retained, emission.changes)


class MemoryView:
    """A hot in-memory anchor; changes apply at once, each under the cache lock (the
    caller holds the anchor's lock, so nothing else changes this anchor meanwhile)."""

    def __init__(self, store: MemoryStore, anchor: AnchorCache) -> None:
        self.store = store
        self.anchor = anchor
        self.ref = anchor.ref
        self.root = anchor.root

    def prefetch(self, keys: Iterable[Key]) -> None:
        pass

    def get(self, key: Key) -> FlatRecord | None:
        return self.anchor.records.get(key)

    def holds(self, keys: Iterable[Key]) -> set[Key]:
        return {key for key in keys if key in self.anchor.records}

    def referrers_of(self, key: Key) -> set[Key]:
        return self.anchor.referrers.get(key, set())

    def put(self, record: FlatRecord) -> FlatRecord | None:
        with self.store.cache.lock:
            return self.store.cache.put(self.anchor, record)

    def remove(self, key: Key) -> FlatRecord | None:
        with self.store.cache.lock:
            return self.store.cache.remove(self.anchor, key)

    def all_records(self) -> dict[Key, FlatRecord]:
        with self.store.cache.lock:
            return dict(self.anchor.records)

    def drop(self) -> None:
        with self.store.cache.lock:
            self.store.cache.drop(self.ref)

    def emit(
        self, frames: list[tuple[Target, str]], retained: Retained, changes: list[Change]
    ) -> None:
        for target, frame in frames:
            self.store.publisher.publish(self.ref, frame, target, retained)
        with self.store.cache.lock:
            self.anchor.remember(changes, int(rx_settings.RX_HISTORY_SIZE))
            gone = self.store.cache.get(self.ref) is not self.anchor
        if gone:
            self.store.publisher.anchor_gone(self.ref)
