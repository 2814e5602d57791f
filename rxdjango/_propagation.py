"""From changed instances to per-anchor deltas: refresh, diff, reconcile, publish.

Given the keys of instances that changed in one committed transaction, the
:class:`Propagator` of a channel

1. reads each changed instance once (flat serialization, in bulk per layer),
   however many anchors and clients hold it;
2. finds the anchors holding it through the cache index (no database query);
3. refreshes the parents whose list of ids may have changed (the instance was
   created, deleted, moved to another parent, or the list is ordered by a
   field that may have changed);
4. per anchor, diffs against the cached record and keeps only changed fields;
   ids newly referenced bring their whole subtree in as ``create`` records;
   records no longer reachable from the anchor are removed and sent as
   ``delete``;
5. encodes each anchor's delta once (once per owner for ``user_key`` records)
   and publishes it.

The propagator works on an :class:`AnchorStore` (the embedded memory cache or
Redis); the caller serializes propagation per channel (a lock) and runs it in
synchronous (ORM-safe) code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import _codec, _metrics
from ._loader import FlatRecord, fetch_layer, load_subtrees, parent_links
from ._protocol import Operation, delete_record
from ._state_model import EdgeKind, Key, StateModel

__all__ = [
    "AnchorRef",
    "AnchorStore",
    "AnchorView",
    "Change",
    "Delta",
    "Propagator",
    "diff_fields",
    "encode_delta",
]

#: (channel id, anchor pk as sent on the wire)
AnchorRef = tuple[str, Any]
#: The key of a deleted record → pks of the other anchors of the channel still holding it.
Retained = dict[Key, frozenset[Any]]


@dataclass(frozen=True)
class Change:
    """One record change in an anchor's history (for reconnect catch-up)."""

    tstamp: float
    key: Key
    deleted: bool
    owner: Any


class AnchorView(Protocol):
    """One hot anchor's records, as one propagation reads and changes them."""

    ref: AnchorRef
    root: Key

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Hint: ``keys`` (and who references them) are about to be read."""

    def get(self, key: Key) -> FlatRecord | None: ...

    def holds(self, keys: Iterable[Key]) -> set[Key]:
        """The subset of ``keys`` this anchor holds."""

    def referrers_of(self, key: Key) -> set[Key]:
        """Keys of the held records that reference ``key``."""

    def put(self, record: FlatRecord) -> FlatRecord | None:
        """Hold ``record``; returns the record it replaced."""

    def remove(self, key: Key) -> FlatRecord | None: ...

    def all_records(self) -> dict[Key, FlatRecord]: ...

    def drop(self) -> None:
        """The anchor row is gone: forget the anchor."""

    def save(self) -> None:
        """Make the changes visible to :meth:`AnchorStore.anchors_containing`."""

    def emit(
        self, frames: list[tuple[Any, str]], retained: Retained, changes: list[Change]
    ) -> None:
        """Deliver ``frames`` ((owner or None, frame)) to the anchor's clients in every
        process, record ``changes`` in its history, and tell its clients if it was dropped."""


class AnchorStore(Protocol):
    """Where hot anchors live: found by the keys they hold, opened by reference."""

    def anchors_containing(self, keys: Iterable[Key]) -> dict[Key, set[AnchorRef]]: ...

    def open(self, ref: AnchorRef) -> AnchorView | None:
        """A view of ``ref`` if it is hot, else None."""


def diff_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fields of ``new`` whose value differs from ``old``."""
    return {name: value for name, value in new.items() if name not in old or old[name] != value}


@dataclass
class Delta:
    """What the clients of one anchor receive for one committed batch."""

    creates: list[FlatRecord] = field(default_factory=list)
    updates: list[tuple[FlatRecord, dict[str, Any]]] = field(default_factory=list)
    deletes: list[FlatRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)

    def add_change(self, cached: FlatRecord, record: FlatRecord) -> bool:
        """Add what turns ``cached`` into ``record``; False if nothing changed.

        A record that changes owner leaves the old owner (delete) and reaches the
        new one whole (create); otherwise only the changed fields travel.
        """
        if cached.owner != record.owner:
            self.deletes.append(cached)
            self.creates.append(record)
            return True
        changes = diff_fields(cached.data, record.data)
        if changes:
            self.updates.append((record, changes))
        return bool(changes)


def encode_delta(delta: Delta, tstamp: float) -> list[tuple[Any, str]]:
    """(owner, frame) pairs: public records first (owner None), then per owner."""
    groups: dict[Any, list[bytes]] = {None: []}
    for record in delta.creates:
        wire = {**record.data, "_tstamp": tstamp, "_operation": Operation.CREATE}
        groups.setdefault(record.owner, []).append(_codec.encode_bytes(wire))
    for record, changes in delta.updates:
        wire = {
            "id": record.key[1],
            "_instance_type": record.key[0],
            **changes,
            "_tstamp": tstamp,
            "_operation": Operation.UPDATE,
        }
        groups.setdefault(record.owner, []).append(_codec.encode_bytes(wire))
    for record in delta.deletes:
        wire = delete_record(*record.key, tstamp)
        groups.setdefault(record.owner, []).append(_codec.encode_bytes(wire))
    return [(owner, _codec.join_array(items)) for owner, items in groups.items() if items]


class Propagator:
    """Applies committed changes to the hot anchors of one channel."""

    def __init__(self, state_model: StateModel, channel_id: str, store: AnchorStore) -> None:
        self.state_model = state_model
        self.channel_id = channel_id
        self.store = store

    def apply(
        self, touched: dict[str, set[Any]], tstamp: float, only: AnchorRef | None = None
    ) -> None:
        """Propagate changes to instances ``touched`` ({instance type: pks})."""
        views = _Views(self.store, self.channel_id, only)
        fetched: dict[Key, FlatRecord | None] = {}
        self._fetch(self._relevant(touched, views), fetched, tstamp)
        links = {link for r in fetched.values() if r is not None for link in r.parent_links}
        holders = self.store.anchors_containing([*fetched, *links])
        candidates: dict[Key, set[AnchorRef]] = {}
        for key, record in fetched.items():
            found = set(holders.get(key, ()))
            if record is not None:
                for link in record.parent_links:
                    found |= holders.get(link, set())
            candidates[key] = found
        involved: dict[AnchorRef, AnchorView] = {}
        for refs in candidates.values():
            for ref in refs:
                view = views.open(ref)
                if view is not None:
                    involved[ref] = view
        if not involved:
            return
        for view in involved.values():
            view.prefetch(fetched)
        parents: set[Key] = set()
        for key, record in fetched.items():
            for ref in candidates[key]:
                if ref in involved:
                    parents |= self._parents_to_refresh(involved[ref], key, record)
        missing: dict[str, set[Any]] = {}
        for key in parents - fetched.keys():
            missing.setdefault(key[0], set()).add(key[1])
        self._fetch(missing, fetched, tstamp)
        deltas = []
        for view in involved.values():
            view.prefetch(parents)
            deltas.append((view, self._reconcile(view, fetched, tstamp)))
        for view, _ in deltas:
            view.save()
        # Published once every anchor is reconciled and saved, so a delete knows where
        # its record still lives (an instance moved between two anchors of one list).
        for view, delta in deltas:
            self._publish(view, delta, tstamp)

    def replace_all(self, view: AnchorView, fresh: dict[Key, FlatRecord], tstamp: float) -> None:
        """Make the anchor hold exactly ``fresh`` and send its clients the difference."""
        delta = Delta()
        held = view.all_records()
        for record in fresh.values():
            cached = view.put(record)
            if cached is None:
                delta.creates.append(record)
            else:
                delta.add_change(cached, record)
        for key in [k for k in held if k not in fresh]:
            removed = view.remove(key)
            if removed is not None:
                delta.deletes.append(removed)
        view.save()
        self._publish(view, delta, tstamp)

    def _publish(self, view: AnchorView, delta: Delta, tstamp: float) -> None:
        retained: Retained = {}
        if delta.deletes:
            holders = self.store.anchors_containing([r.key for r in delta.deletes])
            for record in delta.deletes:
                others = frozenset(
                    ref[1]
                    for ref in holders.get(record.key, ())
                    if ref[0] == self.channel_id and ref != view.ref
                )
                if others:
                    retained[record.key] = others
        changes = [
            *(Change(tstamp, r.key, False, r.owner) for r in delta.creates),
            *(Change(tstamp, r.key, False, r.owner) for r, _ in delta.updates),
            *(Change(tstamp, r.key, True, r.owner) for r in delta.deletes),
        ]
        frames = encode_delta(delta, tstamp)
        _metrics.count(frames=len(frames))
        view.emit(frames, retained, changes)

    # -- steps -----------------------------------------------------------------

    def _relevant(self, touched: dict[str, set[Any]], views: _Views) -> dict[str, set[Any]]:
        """Keep the instances a hot anchor of this channel holds or may now hold.

        An instance no anchor holds matters only if one of its parents is held
        (it was created or moved there): that is checked with a light query of
        its foreign keys, without serializing it.
        """
        relevant: dict[str, set[Any]] = {}
        for instance_type, pks in touched.items():
            layer = self.state_model.layers.get(instance_type)
            if layer is None:
                continue
            keys = [(instance_type, pk) for pk in pks]
            holders = self.store.anchors_containing(keys)
            held = {key[1] for key in keys if views.any_hot(holders.get(key, ()))}
            unheld = set(pks) - held
            if unheld and any(
                edge.kind in (EdgeKind.REVERSE, EdgeKind.PROPERTY) for edge in layer.incoming
            ):
                links = parent_links(layer, unheld)
                link_holders = self.store.anchors_containing(
                    {link for found in links.values() for link in found}
                )
                for pk, found in links.items():
                    if any(views.any_hot(link_holders.get(link, ())) for link in found):
                        held.add(pk)
            if held:
                relevant[instance_type] = held
        return relevant

    def _fetch(
        self, wanted: dict[str, set[Any]], into: dict[Key, FlatRecord | None], tstamp: float
    ) -> None:
        for instance_type, pks in wanted.items():
            layer = self.state_model.layers.get(instance_type)
            if layer is None or not pks:
                continue
            records = fetch_layer(layer, pks, tstamp)
            _metrics.count(serialized=len(records))
            for pk in pks:
                into[(instance_type, pk)] = records.get(pk)

    def _parents_to_refresh(
        self, view: AnchorView, key: Key, record: FlatRecord | None
    ) -> set[Key]:
        cached = view.get(key)
        holders = view.referrers_of(key)
        if record is None:
            return set(holders)
        if (
            cached is not None
            and cached.parent_links == record.parent_links
            and not self.state_model.layers[key[0]].reorders_parents
        ):
            return set()
        old_links = cached.parent_links if cached is not None else frozenset()
        return view.holds(set(holders) | old_links | record.parent_links)

    def _reconcile(
        self, view: AnchorView, fetched: dict[Key, FlatRecord | None], tstamp: float
    ) -> Delta:
        delta = Delta()
        entering: set[Key] = set()
        orphans: set[Key] = set()  # lost a referrer: removed unless another one remains
        for key, record in fetched.items():
            cached = view.get(key)
            if cached is None:
                continue
            if record is None:
                if key == view.root:
                    view.drop()
                    return Delta(deletes=[cached])
                view.remove(key)
                delta.deletes.append(cached)
                orphans.update(cached.refs)
                continue
            if not delta.add_change(cached, record):
                if cached.parent_links != record.parent_links:
                    view.put(replace(record, tstamp=cached.tstamp))
                continue
            view.put(record)
            old_refs, new_refs = set(cached.refs), set(record.refs)
            entering |= new_refs - old_refs
            orphans |= old_refs - new_refs
        # A record the anchor lacks although a held record lists it: rows read by two
        # propagations racing on one instance (deleted, then saved again by another
        # writer) can leave a parent's list ahead of its children. Load it now.
        entering |= {
            key
            for key, record in fetched.items()
            if record is not None and view.get(key) is None and view.referrers_of(key)
        }
        entering -= view.holds(entering)
        if entering:
            available = {k: r for k, r in fetched.items() if r is not None and k in entering}
            for record in self._load(entering, available, view, tstamp):
                view.put(record)
                delta.creates.append(record)
        self._collect(view, orphans, delta)
        return delta

    def _collect(self, view: AnchorView, orphans: set[Key], delta: Delta) -> None:
        """Remove the records no held record references any more, and what only they held.

        The state is a tree of serializers, so references never form a cycle and a
        record nobody references is unreachable from the anchor's root.
        """
        stack = list(orphans)
        while stack:
            key = stack.pop()
            if key == view.root or view.referrers_of(key):
                continue
            removed = view.remove(key)
            if removed is not None:
                delta.deletes.append(removed)
                stack.extend(removed.refs)

    def _load(
        self,
        roots: set[Key],
        available: dict[Key, FlatRecord],
        view: AnchorView,
        tstamp: float,
    ) -> Iterable[FlatRecord]:
        """Records of the subtrees under ``roots`` that the anchor does not hold yet."""
        follow = {ref for record in available.values() for ref in record.refs}
        follow -= available.keys()
        follow -= view.holds(follow)
        loaded = load_subtrees(
            self.state_model,
            (roots - set(available)) | follow,
            tstamp,
            known=available,
            held=view.holds,
        )
        _metrics.count(serialized=len(loaded))
        return [*available.values(), *loaded.values()]


class _Views:
    """The anchors one propagation opens, each opened once."""

    def __init__(self, store: AnchorStore, channel_id: str, only: AnchorRef | None) -> None:
        self.store = store
        self.channel_id = channel_id
        self.only = only
        self._opened: dict[AnchorRef, AnchorView | None] = {}

    def open(self, ref: AnchorRef) -> AnchorView | None:
        if ref[0] != self.channel_id or (self.only is not None and ref != self.only):
            return None
        if ref not in self._opened:
            self._opened[ref] = self.store.open(ref)
        return self._opened[ref]

    def any_hot(self, refs: Iterable[AnchorRef]) -> bool:
        return any(self.open(ref) is not None for ref in refs)
