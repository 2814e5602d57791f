"""What one viewer receives of an anchor: records and deltas, rendered per audience.

A *viewer* is a user id, or ``ORDINARY``: any user that no audience involved
names, who sees public records only. Rendering a record for a viewer leaves it
out if the viewer may not see it, and removes from its lists of ids (and its
single references) every child the viewer may not see (each record carries
the audiences of its private children), so that nothing a viewer receives
names a record it does not receive.

A delta is rendered once for ``ORDINARY`` (delivered to every client except
the users it names) and once per named user; a state without private records
names nobody, so a change costs one rendering and one frame whatever the
number of clients. Each viewer receives at most one frame per delta, in the
order creates, updates, deletes.

Pure code: records in, JSON out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _codec
from ._audience import Audience, may_see
from ._hub import Target
from ._protocol import Operation, delete_record

if TYPE_CHECKING:
    from ._change import Change, FlatRecord
    from ._state_model import Key, StateModel

__all__ = ["ORDINARY", "Item", "render_delta", "render_initial", "render_since", "visible_data"]

#: The viewer that no audience names: sees public records only.
ORDINARY = None


@dataclass(frozen=True)
class Item:
    """One record's change in one anchor: as the clients held it, and as it is now."""

    before: FlatRecord | None
    after: FlatRecord | None

    @property
    def key(self) -> Key:
        record = self.after or self.before
        assert record is not None
        return record.key


def visible_data(record: FlatRecord, state_model: StateModel, viewer: Any) -> dict[str, Any]:
    """``record.data`` without the ids of children ``viewer`` may not see."""
    hidden = record.private_children
    if not hidden:
        return record.data
    data = record.data
    filtered: dict[str, Any] | None = None
    for edge in state_model.layers[record.key[0]].private_edges:
        value = data.get(edge.name)
        child_type = edge.child.instance_type
        if isinstance(value, list):
            kept = [pk for pk in value if may_see(hidden.get((child_type, pk)), viewer)]
            if len(kept) != len(value):
                filtered = filtered if filtered is not None else dict(data)
                filtered[edge.name] = kept
        elif value is not None and not may_see(hidden.get((child_type, value)), viewer):
            filtered = filtered if filtered is not None else dict(data)
            filtered[edge.name] = None
    return filtered if filtered is not None else data


def _named(items: Iterable[Item]) -> frozenset[Any]:
    """Every user that an audience involved in ``items`` names."""
    named: set[Any] = set()
    for item in items:
        for record in (item.before, item.after):
            if record is None:
                continue
            if record.audience:
                named |= record.audience
            for audience in record.private_children.values():
                named |= audience
    return frozenset(named)


def _render_items(
    items: list[Item], state_model: StateModel, viewer: Any, tstamp: float
) -> tuple[list[bytes], set[Key]]:
    """The encoded records ``viewer`` receives for ``items``, and the keys they concern."""
    creates: list[bytes] = []
    updates: list[bytes] = []
    deletes: list[bytes] = []
    touched: set[Key] = set()
    for item in items:
        before, after = item.before, item.after
        saw = before is not None and may_see(before.audience, viewer)
        sees = after is not None and may_see(after.audience, viewer)
        if sees:
            assert after is not None
            data = visible_data(after, state_model, viewer)
            if not saw:
                wire = {**data, "_tstamp": tstamp, "_operation": Operation.CREATE}
                creates.append(_codec.encode_bytes(wire))
                touched.add(item.key)
                continue
            assert before is not None
            old = visible_data(before, state_model, viewer)
            changes = {name: value for name, value in data.items() if old.get(name) != value}
            if changes:
                wire = {
                    "id": after.key[1],
                    "_instance_type": after.key[0],
                    **changes,
                    "_tstamp": tstamp,
                    "_operation": Operation.UPDATE,
                }
                updates.append(_codec.encode_bytes(wire))
                touched.add(item.key)
        elif saw:
            deletes.append(_codec.encode_bytes(delete_record(*item.key, tstamp)))
            touched.add(item.key)
    return [*creates, *updates, *deletes], touched


def render_delta(
    items: list[Item], state_model: StateModel, tstamp: float
) -> tuple[list[tuple[Target, str]], list[tuple[Key, Audience]]]:
    """Frames for every viewer of ``items`` and, for the anchor's history, who received
    something about each key (None: everyone)."""
    named = _named(items) if state_model.has_private else frozenset()
    frames: list[tuple[Target, str]] = []
    recipients: dict[Key, Audience] = {}
    encoded, touched = _render_items(items, state_model, ORDINARY, tstamp)
    if encoded:
        frames.append(((None, named), _codec.join_array(encoded)))
    for key in touched:
        recipients[key] = None
    for user in sorted(named, key=repr):
        encoded, touched = _render_items(items, state_model, user, tstamp)
        if encoded:
            frames.append(((frozenset((user,)), frozenset()), _codec.join_array(encoded)))
        for key in touched:
            if key not in recipients:
                recipients[key] = frozenset((user,))
            elif (current := recipients[key]) is not None:
                recipients[key] = current | {user}
    return frames, list(recipients.items())


def render_initial(
    records: Iterable[FlatRecord], state_model: StateModel, viewer: Any
) -> Iterator[bytes]:
    """An anchor's records as ``initial_state``, as ``viewer`` may see them."""
    for record in records:
        if may_see(record.audience, viewer):
            yield _initial(record, state_model, viewer)


def _initial(record: FlatRecord, state_model: StateModel, viewer: Any) -> bytes:
    """One record as ``initial_state`` for ``viewer`` (its fields decoded only if its lists
    must be filtered; nothing kept once encoded)."""
    if not record.private_children:  # shown as stored, to everyone who sees it
        return record.initial_state_bytes()
    data = visible_data(record, state_model, viewer)
    if data is record.data:
        return record.initial_state_bytes()
    wire = {**data, "_tstamp": record.tstamp, "_operation": Operation.INITIAL_STATE}
    return _codec.encode_bytes(wire)


def render_since(
    changes: list[Change],
    current: Mapping[Key, FlatRecord],
    state_model: StateModel,
    viewer: Any,
) -> Iterator[bytes]:
    """A catch-up for ``viewer``: the current state of every record it received something
    about since its last update (``current`` holds those that still exist), or a delete
    if it may no longer see it."""
    for key, tstamp in changed_for(changes, viewer).items():
        record = current.get(key)
        if record is not None and may_see(record.audience, viewer):
            data = visible_data(record, state_model, viewer)
            yield _codec.encode_bytes(
                {**data, "_tstamp": record.tstamp, "_operation": Operation.CREATE}
            )
        else:
            yield _codec.encode_bytes(delete_record(*key, tstamp))


def changed_for(changes: list[Change], viewer: Any) -> dict[Key, float]:
    """The keys ``viewer`` received something about in ``changes``, with the last time."""
    latest: dict[Key, float] = {}
    for change in changes:
        if may_see(change.audience, viewer):
            latest[change.key] = max(latest.get(change.key, 0.0), change.tstamp)
    return latest
