"""Read flat records from the database, layer by layer, in bulk.

The number of queries depends on the shape of the serializer tree, never on
the number of rows: one query per layer visited, plus one per list reference
(reverse foreign key, many-to-many, related property) and the prefetches the
layer's own fields need. All functions here are synchronous ORM code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from . import _codec
from ._protocol import Operation
from ._state_model import Edge, EdgeKind, Key, Layer, StateModel, pk_repr

__all__ = ["FlatRecord", "fetch_layer", "load_subtrees", "parent_links"]

#: Largest ``pk__in`` list sent in one query (SQLite limits bound parameters).
IN_CHUNK = 5000

#: Called in the loading thread with a layer's instance type each time ``load_subtrees``
#: has read that layer (a test seam: :func:`rxdjango.testing.between_load_layers`).
layer_observers: list[Callable[[str], None]] = []


@dataclass
class FlatRecord:
    """One instance as cached: wire fields, owner, and the keys it references."""

    key: Key
    data: dict[str, Any]
    #: The ``user_key`` value of the row (a wire pk), None for layers without one.
    owner: Any = None
    refs: list[Key] = field(default_factory=list)
    tstamp: float = 0.0
    #: Parents that hold this record through a child-side relation (reverse foreign key
    #: or related property), as of when it was read: a change here means a parent's
    #: list of ids changed.
    parent_links: frozenset[Key] = frozenset()
    #: Who may see it in its anchor (None: everyone), inherited from the private records
    #: above it (:mod:`rxdjango._audience`); set when the record is placed in an anchor.
    audience: frozenset[Any] | None = None
    #: The audiences of the children it names that are not public, so it can be rendered
    #: for one viewer (its lists filtered) without reading them.
    private_children: Mapping[Key, frozenset[Any]] = field(default_factory=dict)
    _initial: bytes | None = field(default=None, repr=False, compare=False)

    def initial_state_bytes(self) -> bytes:
        """The record encoded as ``initial_state``, computed once per record.

        Records are never mutated after they are built (a change replaces the
        record), so the encoding can be shared by every client that loads it.
        """
        if self._initial is None:
            self._initial = _codec.encode_bytes(
                {**self.data, "_tstamp": self.tstamp, "_operation": Operation.INITIAL_STATE}
            )
        return self._initial


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


def _child_ids(edge: Edge, parent_pks: list[Any]) -> dict[Any, list[Any]]:
    """For a list-like edge, the ordered child pks of each parent, in one query."""
    assert edge.child_lookup is not None
    child_model = edge.child.model
    ordering = [*(child_model._meta.ordering or []), "pk"]
    result: dict[Any, list[Any]] = {pk: [] for pk in parent_pks}
    seen: set[tuple[Any, Any]] = set()  # a join through several paths may repeat a pair
    for chunk in _chunks(parent_pks):
        rows = (
            child_model._default_manager.filter(**{f"{edge.child_lookup}__in": chunk})
            .order_by(*ordering)
            .values_list(edge.child_lookup, "pk")
        )
        for parent_pk, child_pk in rows:
            bucket = result.get(parent_pk)
            if bucket is not None and (parent_pk, child_pk) not in seen:
                seen.add((parent_pk, child_pk))
                bucket.append(child_pk)
    return result


def fetch_layer(layer: Layer, pks: Iterable[Any], tstamp: float = 0.0) -> dict[Any, FlatRecord]:
    """Flat records of ``layer`` for ``pks`` that still exist, keyed by wire pk."""
    pk_list = list(dict.fromkeys(pks))
    objects: list[models.Model] = []
    for chunk in _chunks(pk_list):
        queryset = layer.model._default_manager.filter(pk__in=chunk)
        if layer.select_related:
            queryset = queryset.select_related(*layer.select_related)
        if layer.prefetch_related:
            queryset = queryset.prefetch_related(*layer.prefetch_related)
        objects.extend(queryset)
    if not objects:
        return {}
    object_pks = [obj.pk for obj in objects]
    property_parents = _property_parents(layer, object_pks)
    lists: dict[str, dict[Any, list[Any]]] = {}
    for edge in layer.edges:
        if edge.kind is not EdgeKind.FORWARD:
            lists[edge.name] = _child_ids(edge, object_pks)
    records: dict[Any, FlatRecord] = {}
    for obj in objects:
        data = _codec.native(layer.serialize_fields(obj))
        refs: list[Key] = []
        for edge in layer.edges:
            child_type = edge.child.instance_type
            if edge.kind is EdgeKind.FORWARD:
                value = pk_repr(getattr(obj, edge.parent_attname))
                data[edge.name] = value
                if value is not None:
                    refs.append((child_type, value))
                continue
            child_pks = [pk_repr(pk) for pk in lists[edge.name][obj.pk]]
            if edge.many:
                data[edge.name] = child_pks
                refs.extend((child_type, pk) for pk in child_pks)
            else:
                single = child_pks[0] if child_pks else None
                data[edge.name] = single
                if single is not None:
                    refs.append((child_type, single))
        key = (layer.instance_type, pk_repr(obj.pk))
        links = set(property_parents.get(obj.pk, ()))
        for edge in layer.incoming:
            if edge.kind is EdgeKind.REVERSE:
                parent_pk = getattr(obj, edge.child_attname)
                if parent_pk is not None:
                    links.add((edge.parent.instance_type, pk_repr(parent_pk)))
        records[key[1]] = FlatRecord(key, data, layer.owner_of(obj), refs, tstamp, frozenset(links))
    return records


def parent_links(layer: Layer, pks: Iterable[Any]) -> dict[Any, frozenset[Key]]:
    """Only the parent links of ``pks`` (no serialization): one light query per relation.

    Keyed by wire pk; rows that no longer exist are absent.
    """
    pk_list = list(pks)
    attnames = [e.child_attname for e in layer.incoming if e.kind is EdgeKind.REVERSE]
    reverse = [e for e in layer.incoming if e.kind is EdgeKind.REVERSE]
    links: dict[Any, set[Key]] = {}
    for chunk in _chunks(pk_list):
        rows = layer.model._default_manager.filter(pk__in=chunk).values_list("pk", *attnames)
        for pk, *values in rows:
            found = links.setdefault(pk, set())
            for edge, value in zip(reverse, values, strict=True):
                if value is not None:
                    found.add((edge.parent.instance_type, pk_repr(value)))
    for pk, parents in _property_parents(layer, list(links)).items():
        links[pk].update(parents)
    return {pk_repr(pk): frozenset(found) for pk, found in links.items()}


def _property_parents(layer: Layer, pks: list[Any]) -> dict[Any, list[Key]]:
    """Parents reaching ``pks`` through a @related_property, one query per such edge."""
    result: dict[Any, list[Key]] = {}
    for edge in layer.incoming:
        if edge.kind is not EdgeKind.PROPERTY:
            continue
        for chunk in _chunks(pks):
            rows = (
                layer.model._default_manager.filter(pk__in=chunk)
                .exclude(**{f"{edge.child_lookup}__isnull": True})
                .values_list("pk", edge.child_lookup)
            )
            for pk, parent_pk in rows:
                result.setdefault(pk, []).append((edge.parent.instance_type, pk_repr(parent_pk)))
    return result


def load_subtrees(
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
            for record in fetch_layer(current, wanted, tstamp).values():
                loaded[record.key] = record
                for ref in record.refs:
                    if ref not in loaded and ref not in skip:
                        frontier.setdefault(ref[0], set()).add(ref[1])
            for observer in list(layer_observers):
                observer(kind)
    return loaded
