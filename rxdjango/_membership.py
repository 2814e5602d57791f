"""Which anchors hold an instance, read from the database (not from the cache).

Writes must be confined to the writer's anchors. The cache could lag behind a
move that has just committed, or hold nothing for an anchor that expired, so
the check walks the state tree upwards in the database, inside the write's
transaction: from the instance to its parents, layer by layer, until it reaches
anchor rows. One query per relation crossed, never per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._state_model import Edge, EdgeKind, Layer, StateModel, pk_repr

__all__ = ["anchors_holding"]


def _parent_pks(edge: Edge, child_pks: set[Any]) -> set[Any]:
    if edge.kind is EdgeKind.FORWARD:
        rows = edge.parent.model._default_manager.filter(
            **{f"{edge.parent_attname}__in": child_pks}
        ).values_list("pk", flat=True)
    else:
        rows = (
            edge.child.model._default_manager.filter(pk__in=child_pks)
            .exclude(**{f"{edge.child_lookup}__isnull": True})
            .values_list(edge.child_lookup, flat=True)
        )
    return set(rows)


def anchors_holding(state_model: StateModel, layer: Layer, pks: Iterable[Any]) -> set[Any]:
    """Wire pks of the anchor rows whose state contains any of ``pks`` of ``layer``."""
    anchors: set[Any] = set()
    seen: dict[str, set[Any]] = {}
    frontier: dict[str, set[Any]] = {layer.instance_type: set(pks)}
    while frontier:
        instance_type, wanted = frontier.popitem()
        done = seen.setdefault(instance_type, set())
        wanted -= done
        if not wanted:
            continue
        done |= wanted
        current = state_model.layers[instance_type]
        if current is state_model.root:
            anchors |= {pk_repr(pk) for pk in wanted}
        for edge in current.incoming:
            parents = _parent_pks(edge, wanted)
            if parents:
                frontier.setdefault(edge.parent.instance_type, set()).update(parents)
    return anchors
