"""The embedded (in-process, in-memory) instance cache.

Per anchor it keeps the flat records of the anchor's state, who references
whom, and the anchor's cache status. Across anchors it keeps an index from a
record key to the anchors that hold it, which is how a change finds the
anchors it affects without querying the database.

Concurrency: every method must be called with :attr:`MemoryCache.lock` held
(it is reentrant). Changes are applied and published under that lock, so the
order in which clients see changes equals the order the cache applied them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ._loader import FlatRecord
from ._state_model import Key

__all__ = ["AnchorCache", "AnchorRef", "AnchorStatus", "Change", "MemoryCache"]

#: (channel id, anchor pk as sent on the wire)
AnchorRef = tuple[str, Any]


@dataclass(frozen=True)
class Change:
    """One record change in an anchor's history (for reconnect catch-up)."""

    tstamp: float
    key: Key
    deleted: bool
    owner: Any


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
    #: Keys changed while heating; replayed once the load lands.
    journal: dict[str, set[Any]] = field(default_factory=dict)
    #: Monotonic deadline of the current loader's lease (HEATING only).
    lease_until: float = 0.0
    loaded: threading.Event = field(default_factory=threading.Event)
    idle_since: float | None = None
    #: Recent changes, oldest first; complete for every change after ``complete_after``.
    history: deque[Change] = field(default_factory=deque)
    complete_after: float = 0.0

    def remember(self, changes: Iterable[Change], limit: int) -> None:
        """Append to the history, forgetting the oldest beyond ``limit`` entries."""
        self.history.extend(changes)
        while len(self.history) > limit:
            self.complete_after = max(self.complete_after, self.history.popleft().tstamp)

    def changes_since(self, since: float) -> list[Change] | None:
        """Changes at or after ``since``; None if the history cannot prove completeness."""
        if since <= self.complete_after:
            return None
        return [change for change in self.history if change.tstamp >= since]

    def reachable(self) -> set[Key]:
        """Keys reachable from the anchor's root through references."""
        seen: set[Key] = set()
        stack = [self.root]
        while stack:
            key = stack.pop()
            if key in seen or key not in self.records:
                continue
            seen.add(key)
            stack.extend(self.records[key].refs)
        return seen


class MemoryCache:
    """Anchors of every channel in this process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._anchors: dict[AnchorRef, AnchorCache] = {}
        self._index: dict[Key, set[AnchorRef]] = {}
        self._by_channel: dict[str, set[AnchorRef]] = {}
        self._idle: set[AnchorRef] = set()

    # -- anchors ----------------------------------------------------------------

    def get(self, ref: AnchorRef) -> AnchorCache | None:
        return self._anchors.get(ref)

    def anchors_of(self, channel_id: str) -> list[AnchorCache]:
        return [self._anchors[ref] for ref in self._by_channel.get(channel_id, ())]

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

    def put(self, anchor: AnchorCache, record: FlatRecord) -> FlatRecord | None:
        """Store ``record`` in ``anchor``; returns the record it replaced."""
        previous = anchor.records.get(record.key)
        if previous is not None:
            self._unlink(anchor, previous)
        anchor.records[record.key] = record
        for ref in record.refs:
            anchor.referrers.setdefault(ref, set()).add(record.key)
        self._index.setdefault(record.key, set()).add(anchor.ref)
        return previous

    def remove(self, anchor: AnchorCache, key: Key) -> FlatRecord | None:
        record = anchor.records.pop(key, None)
        if record is not None:
            self._unlink(anchor, record)
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
