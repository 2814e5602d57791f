"""Who may see a record: its audience, inherited down the state tree.

A record of a layer that declares ``user_key`` belongs to the user its row
names, and so does everything nested below it: a private record's subtree is
private to the same owner. A record reached by several paths is seen by
everyone any of those paths shows it to (one public path makes it public); a
record below private records of two users is seen by both.

An audience is ``None`` (public: every client of the anchor) or a frozenset of
user ids (possibly empty: nobody). User ids are wire pks (UUIDs as strings), so
they compare equal across processes.

Each record also carries the audiences of its children that are not public
(``private_children``), so that it can be rendered for a viewer on its own,
its lists of ids filtered, without reading its children: a reader that sees
the record at one moment sees consistent lists.

This module is pure: it reads an anchor through :class:`Graph` and never
touches the ORM, Redis or a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol

from ._change import Audience, FlatRecord
from ._state_model import Key, StateModel

__all__ = [
    "Audience",
    "Graph",
    "assign_all",
    "assign_changed",
    "may_see",
    "restrict",
    "union",
]

NOBODY: Audience = frozenset()


def union(first: Audience, second: Audience) -> Audience:
    if first is None or second is None:
        return None
    return first | second


def restrict(inherited: Audience, owner: Any) -> Audience:
    """The audience of a record owned by ``owner`` (None: no owner) reached by paths
    that show it to ``inherited``."""
    if owner is None:
        return inherited
    if inherited is None or owner in inherited:
        return frozenset((owner,))
    return NOBODY


def may_see(audience: Audience, user: Any) -> bool:
    """Whether ``user`` (None: a user named in no audience) sees a record of ``audience``."""
    return audience is None or (user is not None and user in audience)


class Graph(Protocol):
    """An anchor's records as audience computation reads and updates them."""

    root: Key

    def prefetch(self, keys: Iterable[Key]) -> None: ...

    def get(self, key: Key) -> FlatRecord | None: ...

    def referrers_of(self, key: Key) -> set[Key]: ...

    def put(self, record: FlatRecord) -> FlatRecord | None: ...


def private_refs(record: FlatRecord, state_model: StateModel) -> Iterator[Key]:
    """The keys ``record`` names through edges whose children may be private."""
    for edge in state_model.layers[record.key[0]].private_edges:
        value = record.data.get(edge.name)
        for pk in value if isinstance(value, list) else [value]:
            if pk is not None:
                yield (edge.child.instance_type, pk)


def _compute(
    key: Key,
    record: FlatRecord,
    root: Key,
    referrers: Iterable[Key],
    audience_of: Callable[[Key], Audience],
) -> Audience:
    if key == root:
        return restrict(None, record.owner)
    inherited: Audience = NOBODY
    for referrer in referrers:
        inherited = union(inherited, audience_of(referrer))
        if inherited is None:
            break
    return restrict(inherited, record.owner)


def _private_children(
    record: FlatRecord, state_model: StateModel, audience_of: Callable[[Key], Audience]
) -> Mapping[Key, frozenset[Any]]:
    found = {}
    for child in private_refs(record, state_model):
        audience = audience_of(child)
        if audience is not None:
            found[child] = audience
    return found


def assign_all(
    records: Mapping[Key, FlatRecord], root: Key, state_model: StateModel
) -> dict[Key, FlatRecord]:
    """``records`` (a whole anchor, just read) with audiences and private children set."""
    if not state_model.has_private:
        return dict(records)
    referrers: dict[Key, set[Key]] = {}
    for record in records.values():
        for ref in record.refs:
            referrers.setdefault(ref, set()).add(record.key)
    known: dict[Key, Audience] = {}
    visiting: set[Key] = set()

    def audience_of(key: Key) -> Audience:
        if key in known:
            return known[key]
        record = records.get(key)
        if record is None or key in visiting:
            return NOBODY  # a reference without a record, or a cycle: shows nothing
        visiting.add(key)
        found = _compute(key, record, root, referrers.get(key, ()), audience_of)
        visiting.discard(key)
        known[key] = found
        return found

    result = {}
    for key, record in records.items():
        audience = audience_of(key)
        hidden = _private_children(record, state_model, audience_of)
        if audience != record.audience or hidden != record.private_children:
            record = replace(record, audience=audience, private_children=hidden)
        result[key] = record
    return result


def assign_changed(
    graph: Graph, seeds: Iterable[Key], state_model: StateModel
) -> dict[Key, FlatRecord]:
    """Bring audiences up to date after a propagation put ``seeds`` (records written, or
    whose referrers changed): their audiences, everything below one that changed, and
    the private children of every record listing one of them.

    Returns the version before this call of every record it replaced.
    """
    previous: dict[Key, FlatRecord] = {}
    settled: dict[Key, Audience] = {}
    visiting: set[Key] = set()
    pending = list(dict.fromkeys(seeds))
    queued = set(pending)
    changed: set[Key] = set()
    graph.prefetch(pending)

    def audience_of(key: Key) -> Audience:
        if key in settled:
            return settled[key]
        record = graph.get(key)
        if record is None:
            return NOBODY
        if key not in queued or key in visiting:
            return record.audience  # unchanged above the change (or a cycle)
        visiting.add(key)
        found = _compute(key, record, graph.root, graph.referrers_of(key), audience_of)
        visiting.discard(key)
        settled[key] = found
        return found

    def replace_in_graph(record: FlatRecord, **changes: Any) -> None:
        previous.setdefault(record.key, record)
        graph.put(replace(record, **changes))

    while pending:
        key = pending.pop()
        record = graph.get(key)
        if record is None:
            continue
        audience = audience_of(key)
        if audience != record.audience:
            replace_in_graph(record, audience=audience)
            changed.add(key)
            graph.prefetch(record.refs)
            for child in record.refs:
                if child not in queued or child in settled:
                    settled.pop(child, None)
                    queued.add(child)
                    pending.append(child)
    # Whoever lists a record whose audience changed shows a different list to someone;
    # a record written this time lists new children.
    listing = set(queued)
    for key in changed:
        listing |= graph.referrers_of(key)
    listing = {key for key in listing if state_model.layers[key[0]].private_edges}
    graph.prefetch(listing)
    holders = [record for key in listing if (record := graph.get(key)) is not None]
    graph.prefetch({child for record in holders for child in private_refs(record, state_model)})
    for record in holders:
        hidden = _private_children(record, state_model, _current(graph))
        if hidden != record.private_children:
            replace_in_graph(record, private_children=hidden)
    return previous


def _current(graph: Graph) -> Callable[[Key], Audience]:
    def audience_of(key: Key) -> Audience:
        record = graph.get(key)
        return NOBODY if record is None else record.audience

    return audience_of
