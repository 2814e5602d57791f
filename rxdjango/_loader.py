"""Read flat records from the database, layer by layer, in bulk.

The number of queries depends on the shape of the serializer tree, never on
the number of rows: one query per layer visited, plus one per list reference
(reverse foreign key, many-to-many, related property) and the prefetches the
layer's own fields need. All functions here are synchronous ORM code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models

from . import _codec, _priority
from . import _related_properties as related_properties
from ._change import FlatRecord
from ._related_properties import IN_CHUNK
from ._state_model import Edge, EdgeKind, Key, Layer, pk_repr

__all__ = ["ORM_RECORDS", "OrmRecords", "fetch_layer", "parent_links"]


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


def _child_ids(edge: Edge, parent_pks: list[Any]) -> dict[Any, list[Any]]:
    """For a list-like edge, the ordered child pks of each parent, in one query (a
    related property: what its body returns, one query per parent)."""
    if edge.kind is EdgeKind.PROPERTY:
        found = related_properties.members(edge, parent_pks)
        return {pk: found.get(pk, []) for pk in parent_pks}
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
        _priority.step_aside()
        data = _codec.native(layer.serialize_fields(obj))
        refs: list[Key] = []
        for edge in layer.edges:
            child_type = edge.child.instance_type
            if edge.kind is EdgeKind.FORWARD:
                assert edge.parent_attname is not None  # set on every forward edge
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
                assert edge.child_attname is not None  # set on every reverse edge
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
    reverse = [e for e in layer.incoming if e.kind is EdgeKind.REVERSE]
    attnames = [e.child_attname for e in reverse if e.child_attname is not None]
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
    """Parents whose @related_property returns ``pks`` (one query per such edge and
    chunk, then the bodies)."""
    result: dict[Any, list[Key]] = {}
    for edge in layer.incoming:
        if edge.kind is EdgeKind.PROPERTY:
            for pk, parents in related_properties.parents_of(edge, pks).items():
                result.setdefault(pk, []).extend(
                    (edge.parent.instance_type, pk_repr(parent)) for parent in parents
                )
    return result


class OrmRecords:
    """The :class:`~rxdjango._change.RecordSource` of production: rows read with the ORM."""

    def fetch_layer(self, layer: Layer, pks: Iterable[Any], tstamp: float) -> dict[Any, FlatRecord]:
        return fetch_layer(layer, pks, tstamp)

    def parent_links(self, layer: Layer, pks: Iterable[Any]) -> dict[Any, frozenset[Key]]:
        return parent_links(layer, pks)


ORM_RECORDS = OrmRecords()
