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
5. works out who may see each record (:mod:`rxdjango._audience`), renders each
   anchor's delta once for everyone and once per user an audience names
   (:mod:`rxdjango._render`), and publishes it.

The propagator works on an :class:`AnchorStore` (the embedded memory cache or
Redis) and reads rows from a :class:`~rxdjango._change.RecordSource` (the ORM in
production, a table in tests): it imports no database code. The caller orders
propagations per anchor (a lock per anchor, or one for the whole cache) and runs
them in synchronous (ORM-safe) code. With anchor locks it asks first which anchors a
change may reach (:meth:`Propagator.partition`, which also splits it into groups
that reach disjoint anchors), locks those, and passes them as the ``scope`` of
:meth:`Propagator.apply`, which raises :class:`OutOfScope` before
writing anything if the change reaches further (an instance moved into another
anchor meanwhile): the caller then locks those too and applies again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import _metrics, _priority
from ._audience import assign_all, assign_changed
from ._change import AnchorRef, Change, FlatRecord, RecordSource, Retained
from ._hub import Target
from ._render import Item, render_delta
from ._state_model import EdgeKind, Key, StateModel
from ._subtrees import load_subtrees

__all__ = [
    "AnchorRef",
    "AnchorStore",
    "AnchorView",
    "Change",
    "Delta",
    "Emission",
    "OutOfScope",
    "Propagator",
    "propagation_observers",
]

#: Called with each anchor's reference as a propagation is about to change it (its
#: lock held): a test seam (:func:`rxdjango.testing.while_propagating`).
propagation_observers: list[Callable[[AnchorRef], None]] = []


class OutOfScope(Exception):
    """The change reaches anchors the caller did not lock (nothing was written)."""

    def __init__(self, refs: set[AnchorRef]) -> None:
        super().__init__(f"the change reaches {len(refs)} anchor(s) not locked")
        self.refs = refs


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


@dataclass
class Emission:
    """What one propagation tells one anchor's clients, and records in its history."""

    view: AnchorView
    #: frames, each to its target viewers
    frames: list[tuple[Target, str]] = field(default_factory=list)
    retained: Retained = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)


class AnchorStore(Protocol):
    """Where hot anchors live: found by the keys they hold, opened by reference.

    Each method serves every anchor a propagation reaches at once, so that on Redis a
    step costs one round trip however many anchors it reaches.
    """

    def anchors_containing(self, keys: Iterable[Key]) -> dict[Key, set[AnchorRef]]: ...

    def open(
        self, refs: Collection[AnchorRef], locked: bool = True
    ) -> Mapping[AnchorRef, AnchorView]:
        """Views of those of ``refs`` that are hot. ``locked``: their locks are held
        (not for a look before taking them): a store may then repair what a holder that
        died left half done."""

    def prefetch(self, wanted: Iterable[tuple[AnchorView, Iterable[Key]]]) -> None:
        """Hint: each view's keys (and who references them) are about to be read."""

    def save(self, views: Collection[AnchorView]) -> None:
        """Make the views' changes visible to :meth:`anchors_containing`."""

    def emit(self, emissions: list[Emission]) -> None:
        """Write each view's changes, deliver its frames to the anchor's clients in
        every process, record its changes in its history, and tell its clients if the
        anchor was dropped."""


@dataclass
class Delta:
    """What changed in one anchor for one committed batch, before rendering."""

    #: keys new to the anchor
    created: list[Key] = field(default_factory=list)
    #: (record as the clients held it, key) of records whose data or owner changed
    updated: list[tuple[FlatRecord, Key]] = field(default_factory=list)
    #: records removed from the anchor
    deleted: list[FlatRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def changed(cached: FlatRecord, record: FlatRecord) -> bool:
    """Whether the row behind ``cached`` changed (its data or its owner)."""
    return cached.owner != record.owner or cached.data != record.data


def _shown_differently(cached: FlatRecord, record: FlatRecord) -> bool:
    """Whether the same data now reaches other viewers, or shows them other children."""
    return cached.audience != record.audience or cached.private_children != record.private_children


class Propagator:
    """Applies committed changes to the hot anchors of one channel."""

    def __init__(
        self, state_model: StateModel, channel_id: str, store: AnchorStore, source: RecordSource
    ) -> None:
        self.state_model = state_model
        self.channel_id = channel_id
        self.store = store
        self.source = source

    def partition(
        self, touched: dict[str, set[Any]], only: AnchorRef | None = None
    ) -> list[tuple[dict[str, set[Any]], set[AnchorRef]]]:
        """``touched`` split into groups of instances that reach disjoint sets of hot
        anchors (holding them, or one of their parents: created or moved there), each
        with those anchors, the ones to lock before :meth:`apply`; smallest first.
        Instances no hot anchor may hold are left out: an anchor that turns hot later
        reads or replays them."""
        # A look before the locks are taken: another process may be changing these
        # anchors right now.
        views = _Views(self.store, self.channel_id, only, locked=())
        reach = self._reach(touched, views)
        parent: dict[AnchorRef, AnchorRef] = {}

        def root(ref: AnchorRef) -> AnchorRef:
            while parent[ref] != ref:
                parent[ref] = parent[parent[ref]]
                ref = parent[ref]
            return ref

        for refs in reach.values():
            first, *others = refs
            parent.setdefault(first, first)
            for ref in others:
                parent.setdefault(ref, ref)
                parent[root(ref)] = root(first)
        groups: dict[AnchorRef, tuple[dict[str, set[Any]], set[AnchorRef]]] = {}
        for (instance_type, pk), refs in reach.items():
            group_touched, group_refs = groups.setdefault(root(next(iter(refs))), ({}, set()))
            group_touched.setdefault(instance_type, set()).add(pk)
            group_refs |= refs
        return sorted(groups.values(), key=lambda group: sum(map(len, group[0].values())))

    def apply(
        self,
        touched: dict[str, set[Any]],
        tstamp: float,
        only: AnchorRef | None = None,
        scope: Collection[AnchorRef] | None = None,
    ) -> set[Key]:
        """Propagate changes to instances ``touched`` ({instance type: pks}); only to
        the anchor ``only`` if given; :class:`OutOfScope` if it would change an anchor
        outside ``scope`` (when given). Returns the keys of the records that entered
        an anchor, read from rows that may have changed again since (see
        :func:`rxdjango._backends.base.settle`)."""
        views = _Views(self.store, self.channel_id, only, locked=scope)
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
        views.open_many(ref for refs in candidates.values() for ref in refs)
        involved: dict[AnchorRef, AnchorView] = {}
        for refs in candidates.values():
            for ref in refs:
                view = views.open(ref)
                if view is not None:
                    involved[ref] = view
        if not involved:
            return set()
        if scope is not None and not involved.keys() <= set(scope):
            raise OutOfScope(set(involved) - set(scope))
        self.store.prefetch((view, fetched) for view in involved.values())
        # What deciding which parents to refresh reads, for every anchor at once.
        around: dict[AnchorRef, set[Key]] = {}
        for key, record in fetched.items():
            _priority.step_aside()
            for ref in candidates[key]:
                if ref in involved:
                    cached = involved[ref].get(key)
                    near = around.setdefault(ref, set())
                    near |= involved[ref].referrers_of(key)
                    near |= cached.parent_links if cached is not None else frozenset()
                    near |= record.parent_links if record is not None else frozenset()
        self.store.prefetch((involved[ref], keys) for ref, keys in around.items())
        parents: set[Key] = set()
        for key, record in fetched.items():
            for ref in candidates[key]:
                if ref in involved:
                    parents |= self._parents_to_refresh(involved[ref], key, record)
        missing: dict[str, set[Any]] = {}
        for key in parents - fetched.keys():
            missing.setdefault(key[0], set()).add(key[1])
        self._fetch(missing, fetched, tstamp)
        for ref in involved:
            for observer in list(propagation_observers):
                observer(ref)
        deltas = []
        self.store.prefetch((view, parents) for view in involved.values())
        for view in involved.values():
            delta, seeds = self._reconcile(view, fetched, tstamp)
            deltas.append((view, delta, self._assign_audiences(view, seeds)))
        self.store.save(list(involved.values()))
        # Published once every anchor is reconciled and saved, so a delete knows where
        # its record still lives (an instance moved between two anchors of one list).
        self.store.emit(
            [self._emission(view, delta, previous, tstamp) for view, delta, previous in deltas]
        )
        return set().union(*(delta.created for _, delta, _ in deltas))

    def replace_all(self, view: AnchorView, fresh: dict[Key, FlatRecord], tstamp: float) -> None:
        """Make the anchor hold exactly ``fresh`` (a whole anchor read at one moment) and
        send its clients the difference."""
        delta = Delta()
        held = view.all_records()
        for record in assign_all(fresh, view.root, self.state_model).values():
            cached = view.put(record)
            if cached is None:
                delta.created.append(record.key)
            elif changed(cached, record) or _shown_differently(cached, record):
                delta.updated.append((cached, record.key))
        for key in [k for k in held if k not in fresh]:
            removed = view.remove(key)
            if removed is not None:
                delta.deleted.append(removed)
        self.store.save([view])
        self.store.emit([self._emission(view, delta, {}, tstamp)])

    def _assign_audiences(self, view: AnchorView, seeds: set[Key]) -> dict[Key, FlatRecord]:
        """Bring who-may-see-what up to date for the records this propagation put or
        re-parented; the version before of every record that changed because of it."""
        if not self.state_model.has_private or not seeds:
            return {}
        return assign_changed(view, seeds, self.state_model)

    def _emission(
        self, view: AnchorView, delta: Delta, previous: dict[Key, FlatRecord], tstamp: float
    ) -> Emission:
        """The frames and history entries of one anchor's delta (none if nothing shows)."""
        items = self._items(view, delta, previous)
        if not items:
            return Emission(view)
        frames, recipients = render_delta(items, self.state_model, tstamp)
        deleted = {record.key for record in delta.deleted}
        changes = [Change(tstamp, key, key in deleted, audience) for key, audience in recipients]
        retained: Retained = {}
        if deleted:
            holders = self.store.anchors_containing(deleted)
            for key in deleted:
                others = frozenset(
                    ref[1]
                    for ref in holders.get(key, ())
                    if ref[0] == self.channel_id and ref != view.ref
                )
                if others:
                    retained[key] = others
        _metrics.count(frames=len(frames))
        return Emission(view, frames, retained, changes)

    @staticmethod
    def _items(view: AnchorView, delta: Delta, previous: dict[Key, FlatRecord]) -> list[Item]:
        """The records the clients must hear about, as they held them and as they are:
        what the delta changed, and records whose audience or private children changed."""
        items: dict[Key, Item] = {}
        for key in delta.created:
            items[key] = Item(None, view.get(key))
        for cached, key in delta.updated:
            items[key] = Item(cached, view.get(key))
        for record in delta.deleted:
            items[record.key] = Item(record, None)
        for key, before in previous.items():
            if key not in items:
                items[key] = Item(before, view.get(key))
        return list(items.values())

    # -- steps -----------------------------------------------------------------

    def _relevant(self, touched: dict[str, set[Any]], views: _Views) -> dict[str, set[Any]]:
        """Keep the instances a hot anchor of this channel holds or may now hold."""
        relevant: dict[str, set[Any]] = {}
        for instance_type, pk in self._reach(touched, views):
            relevant.setdefault(instance_type, set()).add(pk)
        return relevant

    def _reach(self, touched: dict[str, set[Any]], views: _Views) -> dict[Key, set[AnchorRef]]:
        """The hot anchors each instance of ``touched`` may change: those holding it.

        An instance no anchor holds matters only if one of its parents is held
        (it was created or moved there): that is checked with a light query of
        its foreign keys, without serializing it.
        """
        reach: dict[Key, set[AnchorRef]] = {}
        for instance_type, pks in touched.items():
            layer = self.state_model.layers.get(instance_type)
            if layer is None:
                continue
            keys = [(instance_type, pk) for pk in pks]
            holders = self.store.anchors_containing(keys)
            views.open_many(ref for refs in holders.values() for ref in refs)
            for key in keys:
                hot = views.hot_among(holders.get(key, ()))
                if hot:
                    reach[key] = hot
            unheld = {pk for pk in pks if (instance_type, pk) not in reach}
            if unheld and any(
                edge.kind in (EdgeKind.REVERSE, EdgeKind.PROPERTY) for edge in layer.incoming
            ):
                links = self.source.parent_links(layer, unheld)
                link_holders = self.store.anchors_containing(
                    {link for found in links.values() for link in found}
                )
                views.open_many(ref for refs in link_holders.values() for ref in refs)
                for pk, found in links.items():
                    hot = views.hot_among(
                        ref for link in found for ref in link_holders.get(link, ())
                    )
                    if hot:
                        reach[(instance_type, pk)] = hot
        return reach

    def _fetch(
        self, wanted: dict[str, set[Any]], into: dict[Key, FlatRecord | None], tstamp: float
    ) -> None:
        for instance_type, pks in wanted.items():
            layer = self.state_model.layers.get(instance_type)
            if layer is None or not pks:
                continue
            records = self.source.fetch_layer(layer, pks, tstamp)
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
    ) -> tuple[Delta, set[Key]]:
        """Apply the fetched records to one anchor: the delta, and the keys whose
        audience may have changed (records put, and records that gained or lost a
        referrer)."""
        delta = Delta()
        seeds: set[Key] = set()
        entering: set[Key] = set()
        orphans: set[Key] = set()  # lost a referrer: removed unless another one remains
        for key, record in fetched.items():
            _priority.step_aside()
            cached = view.get(key)
            if cached is None:
                continue
            if record is None:
                if key == view.root:
                    view.drop()
                    return Delta(deleted=[cached]), set()
                view.remove(key)
                delta.deleted.append(cached)
                orphans.update(cached.refs)
                continue
            record = replace(
                record, audience=cached.audience, private_children=cached.private_children
            )
            if not changed(cached, record):
                if cached.parent_links != record.parent_links:
                    view.put(replace(record, tstamp=cached.tstamp))
                continue
            view.put(record)
            delta.updated.append((cached, key))
            seeds.add(key)
            old_refs, new_refs = set(cached.refs), set(record.refs)
            entering |= new_refs - old_refs
            orphans |= old_refs - new_refs
            seeds |= (new_refs - old_refs) | (old_refs - new_refs)
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
                delta.created.append(record.key)
                seeds.add(record.key)
        self._collect(view, orphans, delta)
        return delta, seeds - {r.key for r in delta.deleted}

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
                delta.deleted.append(removed)
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
            self.source,
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

    def __init__(
        self,
        store: AnchorStore,
        channel_id: str,
        only: AnchorRef | None,
        locked: Collection[AnchorRef] | None = None,
    ) -> None:
        self.store = store
        self.channel_id = channel_id
        self.only = only
        #: the anchors whose locks this propagation holds (None: all it opens)
        self.locked = None if locked is None else frozenset(locked)
        self._opened: dict[AnchorRef, AnchorView | None] = {}

    def open(self, ref: AnchorRef) -> AnchorView | None:
        if not self._mine(ref):
            return None
        if ref not in self._opened:
            self.open_many([ref])
        return self._opened[ref]

    def open_many(self, refs: Iterable[AnchorRef]) -> None:
        """Open those of ``refs`` not opened yet, all at once."""
        wanted = {ref for ref in refs if self._mine(ref) and ref not in self._opened}
        if not wanted:
            return
        held = wanted if self.locked is None else wanted & self.locked
        hot = dict(self.store.open(held)) if held else {}
        if wanted - held:
            hot.update(self.store.open(wanted - held, locked=False))
        for ref in wanted:
            self._opened[ref] = hot.get(ref)

    def _mine(self, ref: AnchorRef) -> bool:
        return ref[0] == self.channel_id and (self.only is None or ref == self.only)

    def hot_among(self, refs: Iterable[AnchorRef]) -> set[AnchorRef]:
        """Those of ``refs`` that are hot anchors of this channel."""
        return {ref for ref in refs if self.open(ref) is not None}
