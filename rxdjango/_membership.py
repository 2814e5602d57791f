"""Which anchors hold an instance, and who may see it there, read from the database.

Writes must be confined to what the writer sees. The cache could lag behind a
move that has just committed, or hold nothing for an anchor that expired, so
the checks walk the state tree upwards in the database, inside the write's
transaction: from the instance to its parents, layer by layer, until they reach
anchor rows. :func:`anchors_holding` costs one query per relation crossed, never
per row; :func:`audience_in` follows each path of one row (a few rows), reading
the owner of every private record on the way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models

from . import _related_properties as related_properties
from ._audience import Audience, restrict, union
from ._state_model import Edge, EdgeKind, Layer, StateModel, pk_repr

__all__ = ["anchors_holding", "audience_in"]


def _parent_pks(edge: Edge, child_pks: set[Any]) -> set[Any]:
    if edge.kind is EdgeKind.PROPERTY:  # the parents whose property's body returns them
        held = related_properties.parents_of(edge, child_pks)
        return {parent for parents in held.values() for parent in parents}
    if edge.kind is EdgeKind.FORWARD:
        rows = edge.parent.model._default_manager.filter(
            **{f"{edge.parent_attname}__in": child_pks}
        ).values_list("pk", flat=True)
    else:
        assert edge.child_lookup is not None  # set on every edge but a FORWARD one
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


def audience_in(
    state_model: StateModel,
    layer: Layer,
    pk: Any,
    anchors: Iterable[Any],
    instance: models.Model | None = None,
) -> Audience:
    """Who may see the row ``pk`` of ``layer`` in ``anchors``: the union, over its paths
    up to one of those anchor rows, of the owners that the private records on each path
    restrict it to (None: public). Empty when no path reaches ``anchors``.

    ``instance``: the row itself, read in this transaction (a write's locked row): its
    owner and its foreign keys to parents are taken from it instead of read again.
    """
    wanted = set(anchors)
    found: Audience = frozenset()
    seen: set[tuple[str, Any, Audience]] = set()
    stack: list[tuple[Layer, Any, Audience]] = [(layer, pk, None)]
    while stack:
        current, row, audience = stack.pop()
        held = instance if current is layer and row == pk else None
        if current.user_key_attname is not None:
            owner = (
                getattr(held, current.user_key_attname)
                if held is not None
                else current.model._default_manager.filter(pk=row)
                .values_list(current.user_key_attname, flat=True)
                .first()
            )
            audience = restrict(audience, None if owner is None else pk_repr(owner))
        step = (current.instance_type, row, audience)
        if step in seen or audience == frozenset():
            continue
        seen.add(step)
        if current is state_model.root and pk_repr(row) in wanted:
            found = union(found, audience)
        for edge in current.incoming:
            for parent in _parents_of_row(edge, row, held):
                stack.append((edge.parent, parent, audience))
    return found


def _parents_of_row(edge: Edge, pk: Any, instance: models.Model | None) -> set[Any]:
    """The parents of one row through ``edge``: its foreign key, when the edge is one and
    the row is at hand, else read."""
    if instance is not None and edge.kind is EdgeKind.REVERSE:
        assert edge.child_attname is not None  # set on every reverse edge
        value = getattr(instance, edge.child_attname)
        return set() if value is None else {value}
    return _parent_pks(edge, {pk})
