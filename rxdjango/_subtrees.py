"""Whole subtrees of a state tree, read layer by layer from a record source.

Pure traversal: which rows to ask for, in which order. The rows come from a
:class:`~rxdjango._change.RecordSource` (the ORM in production, a table in tests),
one request per layer visited, so the number of queries follows the shape of the
tree, never the number of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._change import FlatRecord, RecordSource
from ._state_model import Key, StateModel, pk_repr

__all__ = ["layer_observers", "load_subtrees"]

#: Called in the loading thread with a layer's instance type each time ``load_subtrees``
#: has read that layer (a test seam: :func:`rxdjango.testing.between_load_layers`).
layer_observers: list[Callable[[str], None]] = []


def load_subtrees(
    source: RecordSource,
    state_model: StateModel,
    roots: Iterable[Key],
    tstamp: float = 0.0,
    known: Iterable[Key] = (),
    held: Callable[[set[Key]], set[Key]] | None = None,
) -> dict[Key, FlatRecord]:
    """Every record reachable from ``roots``, each loaded once.

    Keys in ``known``, or that ``held`` (asked once per layer visited) says the
    caller already has, are not loaded again, nor followed.
    """
    loaded: dict[Key, FlatRecord] = {}
    skip = set(known)
    frontier: dict[str, set[Any]] = {}
    for instance_type, pk in roots:
        frontier.setdefault(instance_type, set()).add(pk_repr(pk))
    while frontier:
        # Layers in topological order, so a tree visits each layer once.
        for current in state_model.order:
            wanted = frontier.pop(current.instance_type, None)
            if not wanted:
                continue
            kind = current.instance_type
            wanted = {pk for pk in wanted if (kind, pk) not in loaded and (kind, pk) not in skip}
            if held is not None and wanted:
                already = held({(kind, pk) for pk in wanted})
                skip |= already
                wanted -= {pk for _, pk in already}
            for record in source.fetch_layer(current, wanted, tstamp).values():
                loaded[record.key] = record
                for ref in record.refs:
                    if ref not in loaded and ref not in skip:
                        frontier.setdefault(ref[0], set()).add(ref[1])
            for observer in list(layer_observers):
                observer(kind)
    return loaded
