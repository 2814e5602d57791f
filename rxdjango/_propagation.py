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

Must run with the cache lock held, in synchronous (ORM-safe) code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from . import _codec
from ._cache import AnchorCache, AnchorRef, AnchorStatus, Change, MemoryCache
from ._loader import FlatRecord, fetch_layer, load_subtrees, parent_links
from ._protocol import Operation, delete_record
from ._state_model import EdgeKind, Key, StateModel
from .conf import rx_settings

__all__ = ["Delta", "Propagator", "diff_fields", "encode_delta"]

#: publish(anchor ref, frame, owner or None, retained): ``retained`` maps the key of a
#: deleted record to the other anchors (pks) of the channel that still hold it.
Publish = Callable[[AnchorRef, str, Any, dict[Key, frozenset[Any]]], None]


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
    """Applies committed changes to the cached anchors of one channel."""

    def __init__(
        self,
        state_model: StateModel,
        channel_id: str,
        cache: MemoryCache,
        publish: Publish,
        anchor_deleted: Callable[[AnchorRef], None],
    ) -> None:
        self.state_model = state_model
        self.channel_id = channel_id
        self.cache = cache
        self.publish = publish
        self.anchor_deleted = anchor_deleted

    def apply(
        self, touched: dict[str, set[Any]], tstamp: float, only: AnchorRef | None = None
    ) -> None:
        """Propagate changes to instances ``touched`` ({instance type: pks})."""
        fetched: dict[Key, FlatRecord | None] = {}
        self._fetch(self._relevant(touched, only), fetched, tstamp)
        involved: dict[AnchorRef, AnchorCache] = {}
        parents: set[Key] = set()
        for key, record in fetched.items():
            candidates = set(self.cache.anchors_containing(key))
            if record is not None:
                for link in record.parent_links:
                    candidates |= self.cache.anchors_containing(link)
            for ref in candidates:
                anchor = self._hot_anchor(ref, only)
                if anchor is None:
                    continue
                involved[ref] = anchor
                parents |= self._parents_to_refresh(anchor, key, record)
        if not involved:
            return
        missing: dict[str, set[Any]] = {}
        for key in parents - fetched.keys():
            missing.setdefault(key[0], set()).add(key[1])
        self._fetch(missing, fetched, tstamp)
        deltas = [
            (anchor, self._reconcile(anchor, fetched, tstamp)) for anchor in involved.values()
        ]
        # Published once every anchor is reconciled, so a delete knows where its record
        # still lives (an instance moved between two anchors of one list channel).
        for anchor, delta in deltas:
            self._publish(anchor, delta, tstamp)

    def replace_all(self, anchor: AnchorCache, fresh: dict[Key, FlatRecord], tstamp: float) -> None:
        """Make ``anchor`` hold exactly ``fresh`` and send its clients the difference."""
        delta = Delta()
        for record in fresh.values():
            cached = self.cache.put(anchor, record)
            if cached is None:
                delta.creates.append(record)
            else:
                delta.add_change(cached, record)
        for key in [k for k in anchor.records if k not in fresh]:
            removed = self.cache.remove(anchor, key)
            if removed is not None:
                delta.deletes.append(removed)
        self._publish(anchor, delta, tstamp)

    def _publish(self, anchor: AnchorCache, delta: Delta, tstamp: float) -> None:
        retained: dict[Key, frozenset[Any]] = {}
        for record in delta.deletes:
            holders = frozenset(
                ref[1]
                for ref in self.cache.anchors_containing(record.key)
                if ref[0] == self.channel_id and ref != anchor.ref
            )
            if holders:
                retained[record.key] = holders
        for owner, frame in encode_delta(delta, tstamp):
            self.publish(anchor.ref, frame, owner, retained)
        anchor.remember(
            [
                *(Change(tstamp, r.key, False, r.owner) for r in delta.creates),
                *(Change(tstamp, r.key, False, r.owner) for r, _ in delta.updates),
                *(Change(tstamp, r.key, True, r.owner) for r in delta.deletes),
            ],
            int(rx_settings.RX_HISTORY_SIZE),
        )
        if self.cache.get(anchor.ref) is not anchor:
            self.anchor_deleted(anchor.ref)

    # -- steps -----------------------------------------------------------------

    def _relevant(
        self, touched: dict[str, set[Any]], only: AnchorRef | None
    ) -> dict[str, set[Any]]:
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
            held = {pk for pk in pks if self._held((instance_type, pk), only)}
            unheld = set(pks) - held
            if unheld and any(
                edge.kind in (EdgeKind.REVERSE, EdgeKind.PROPERTY) for edge in layer.incoming
            ):
                for pk, links in parent_links(layer, unheld).items():
                    if any(self._held(link, only) for link in links):
                        held.add(pk)
            if held:
                relevant[instance_type] = held
        return relevant

    def _held(self, key: Key, only: AnchorRef | None) -> bool:
        return any(
            self._hot_anchor(ref, only) is not None for ref in self.cache.anchors_containing(key)
        )

    def _fetch(
        self, wanted: dict[str, set[Any]], into: dict[Key, FlatRecord | None], tstamp: float
    ) -> None:
        for instance_type, pks in wanted.items():
            layer = self.state_model.layers.get(instance_type)
            if layer is None or not pks:
                continue
            records = fetch_layer(layer, pks, tstamp)
            for pk in pks:
                into[(instance_type, pk)] = records.get(pk)

    def _hot_anchor(self, ref: AnchorRef, only: AnchorRef | None) -> AnchorCache | None:
        if ref[0] != self.channel_id or (only is not None and ref != only):
            return None
        anchor = self.cache.get(ref)
        if anchor is None or anchor.status is not AnchorStatus.HOT:
            return None
        return anchor

    def _parents_to_refresh(
        self, anchor: AnchorCache, key: Key, record: FlatRecord | None
    ) -> set[Key]:
        cached = anchor.records.get(key)
        holders = anchor.referrers.get(key, set())
        if record is None:
            return set(holders)
        if (
            cached is not None
            and cached.parent_links == record.parent_links
            and not self.state_model.layers[key[0]].reorders_parents
        ):
            return set()
        old_links = cached.parent_links if cached is not None else frozenset()
        found = set(holders) | old_links | record.parent_links
        return {parent for parent in found if parent in anchor.records}

    def _reconcile(
        self, anchor: AnchorCache, fetched: dict[Key, FlatRecord | None], tstamp: float
    ) -> Delta:
        delta = Delta()
        entering: set[Key] = set()
        lost_refs = False
        for key, record in fetched.items():
            cached = anchor.records.get(key)
            if cached is None:
                continue
            if record is None:
                if key == anchor.root:
                    return self._anchor_deleted(anchor, cached)
                self.cache.remove(anchor, key)
                delta.deletes.append(cached)
                lost_refs = True
                continue
            if not delta.add_change(cached, record):
                if cached.parent_links != record.parent_links:
                    self.cache.put(anchor, replace(record, tstamp=cached.tstamp))
                continue
            self.cache.put(anchor, record)
            old_refs, new_refs = set(cached.refs), set(record.refs)
            entering |= {ref for ref in new_refs - old_refs if ref not in anchor.records}
            lost_refs = lost_refs or bool(old_refs - new_refs)
        if entering:
            available = {k: r for k, r in fetched.items() if r is not None and k in entering}
            for record in self._load(entering, available, anchor, tstamp):
                self.cache.put(anchor, record)
                delta.creates.append(record)
        if lost_refs:
            alive = anchor.reachable()
            for key in [k for k in anchor.records if k not in alive]:
                removed = self.cache.remove(anchor, key)
                if removed is not None:
                    delta.deletes.append(removed)
        return delta

    def _load(
        self,
        roots: set[Key],
        available: dict[Key, FlatRecord],
        anchor: AnchorCache,
        tstamp: float,
    ) -> Iterable[FlatRecord]:
        """Records of the subtrees under ``roots`` that ``anchor`` does not hold yet."""
        known = set(anchor.records) | set(available)
        follow = {ref for record in available.values() for ref in record.refs} - known
        loaded = load_subtrees(self.state_model, (roots - set(available)) | follow, tstamp, known)
        return [*available.values(), *loaded.values()]

    def _anchor_deleted(self, anchor: AnchorCache, root: FlatRecord) -> Delta:
        """The anchor row is gone: its clients get its delete, then nothing more."""
        self.cache.drop(anchor.ref)
        return Delta(deletes=[root])
