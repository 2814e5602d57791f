"""The shape of a channel's state: a nested serializer split into flat layers.

A *layer* is one ``ModelSerializer`` class of the tree. Its records carry the
serializer's own (non-nested) fields; every nested serializer field becomes an
*edge* to another layer, and in the record it is replaced by a reference: the
related primary key (single) or the list of related primary keys (many).

This module only introspects serializers and model metadata; it never queries
the database (see :mod:`rxdjango._loader`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, cast

from django.db import models
from rest_framework import serializers

from ._fields import (
    link_table,
    made_by_depth,
    nested_serializer,
    pascal,
    paths_read,
    refuse_unserved,
    relation_named,
    serializer_context,
)
from .decorators import AccessorProperty, walk
from .exceptions import ChannelDeclarationError, UnknownProperty
from .relations import RelatedProperty

__all__ = [
    "Edge",
    "EdgeKind",
    "Key",
    "Layer",
    "StateModel",
    "instance_type_of",
    "pk_repr",
    "wire_pk",
]

#: A record's identity inside an anchor: (instance type, primary key as sent).
Key = tuple[str, Any]


def pk_repr(value: Any) -> Any:
    """Primary key as it travels on the wire (UUIDs as strings)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def wire_pk(model: type[models.Model], value: Any) -> Any:
    """``value`` (a route kwarg, a client id) as ``model``'s pk, as it travels on the wire.

    Raises ValidationError, ValueError or TypeError when it cannot be such a pk.
    """
    return pk_repr(model._meta.pk.to_python(value))


def instance_type_of(serializer_class: type) -> str:
    return f"{serializer_class.__module__}.{serializer_class.__name__}"


class EdgeKind(StrEnum):
    FORWARD = "forward"  # the parent row holds the foreign key (FK, OneToOne)
    REVERSE = "reverse"  # the child row holds a foreign key to the parent
    MANY_TO_MANY = "m2m"  # either side of a ManyToManyField
    PROPERTY = "property"  # a @related_property on the parent model


@dataclass(eq=False)
class Edge:
    """A nested serializer field: parent layer → child layer."""

    name: str
    parent: Layer
    child: Layer
    many: bool
    kind: EdgeKind
    #: FORWARD: the foreign key's attname on the parent model (``developer_id``).
    parent_attname: str | None = None
    #: REVERSE: the foreign key's attname on the child model (``job_id``).
    child_attname: str | None = None
    #: REVERSE / M2M / PROPERTY: ORM lookup from the child model to the parent.
    child_lookup: str | None = None
    #: M2M: the ManyToManyField (on whichever side declares it).
    m2m_field: Any = None
    #: ORM lookup from the parent model to the child (None for a computed relation).
    parent_lookup: str | None = None
    #: PROPERTY: the model attribute (the property whose body gives the children).
    source: str | None = None

    @cached_property
    def order_sensitive(self) -> bool:
        """Whether saving a child can reorder the parent's list of ids."""
        ordering = [str(o).lstrip("-") for o in (self.child.model._meta.ordering or [])]
        return any(o not in ("pk", "id", self.child.model._meta.pk.name) for o in ordering)


@dataclass(eq=False)
class Layer:
    """One serializer class of the tree and how to produce its flat records."""

    serializer_class: type[serializers.ModelSerializer]
    model: type[models.Model]
    instance_type: str
    #: the serializer's name for generated types (a ``Meta.depth`` class: its field's)
    type_name: str
    flat_serializer: serializers.ModelSerializer
    user_key_attname: str | None
    edges: list[Edge] = field(default_factory=list)
    incoming: list[Edge] = field(default_factory=list)
    select_related: list[str] = field(default_factory=list)
    prefetch_related: list[str] = field(default_factory=list)
    #: Whether records of this layer can be private: it declares ``user_key`` or is
    #: nested below a layer that can (set once the tree is built).
    may_be_private: bool = False

    def __repr__(self) -> str:
        return f"<Layer {self.instance_type}>"

    @cached_property
    def reorders_parents(self) -> bool:
        """Whether saving one of these records can reorder a parent's list of ids."""
        return any(
            edge.kind is not EdgeKind.FORWARD and edge.order_sensitive for edge in self.incoming
        )

    @cached_property
    def private_edges(self) -> list[Edge]:
        """Edges whose children may be private: their ids are filtered per user."""
        return [edge for edge in self.edges if edge.child.may_be_private]

    def owner_of(self, obj: models.Model) -> Any:
        """The ``user_key`` value of ``obj`` as a wire pk (None for public layers)."""
        if self.user_key_attname is None:
            return None
        return pk_repr(getattr(obj, self.user_key_attname))

    def serialize_fields(self, obj: models.Model) -> dict[str, Any]:
        """The record of ``obj`` without references and without wire metadata."""
        data = self.flat_serializer.to_representation(obj)
        record: dict[str, Any] = {"id": pk_repr(obj.pk), "_instance_type": self.instance_type}
        record.update(data)
        return record


class StateModel:
    """All layers of one channel's state serializer, rooted at the anchor layer."""

    def __init__(self, state: serializers.BaseSerializer, owner: str) -> None:
        self.owner = owner
        root_serializer = state.child if isinstance(state, serializers.ListSerializer) else state
        if not isinstance(root_serializer, serializers.ModelSerializer):
            raise ChannelDeclarationError(
                f"{owner}: Meta.state must be a ModelSerializer instance, "
                f"got {type(root_serializer).__name__}"
            )
        self.layers: dict[str, Layer] = {}
        #: model whose rows a plain value reads -> [(model holding the value, query path)]
        self.dependencies: dict[type[models.Model], list[tuple[type[models.Model], str]]] = {}
        #: many-to-many link models whose rows a plain list of related values shows
        self.value_links: set[type[models.Model]] = set()
        self.root = self._layer_for(type(root_serializer))
        self._note_subtree_readers()
        self.by_model: dict[type[models.Model], list[Layer]] = {}
        for layer in self.layers.values():
            # concrete_model is typed Optional but set on every model class.
            concrete = cast(type[models.Model], layer.model._meta.concrete_model)
            self.by_model.setdefault(concrete, []).append(layer)
        self.order = _topological_order(self.root, self.layers)
        _mark_private(self.layers.values())
        #: Whether any record of this state can be private (else no per-user work at all).
        self.has_private = any(layer.may_be_private for layer in self.layers.values())
        self.through_models: dict[type[models.Model], list[Edge]] = {}
        for layer in self.layers.values():
            for edge in layer.edges:
                if edge.kind is EdgeKind.MANY_TO_MANY:
                    through = edge.m2m_field.remote_field.through
                    self.through_models.setdefault(through, []).append(edge)
                    self._note_link_readers(through, (edge.parent.model, edge.child.model))

    @property
    def anchor_model(self) -> type[models.Model]:
        return self.root.model

    def layers_for_model(self, model: type[models.Model]) -> list[Layer]:
        return self.by_model.get(cast(type[models.Model], model._meta.concrete_model), [])

    # -- building -------------------------------------------------------------

    def _note_dependencies(self, layer: Layer) -> None:
        """Values of this layer's records read from rows of other models (dotted
        ``source=`` paths, related fields, ``decorators.related_property`` values,
        declared method fields) and, with multi-table inheritance, its parent tables:
        a change to those rows re-reads the records that reach them."""
        for name, serializer_field in layer.flat_serializer.fields.items():
            where = f"{self.owner}: {layer.serializer_class.__name__}.{name}"
            for path in paths_read(layer.model, layer.serializer_class, name, serializer_field):
                self._depend(layer.model, path, where)
            link = link_table(layer.model, serializer_field, name)
            if link is not None:
                self.value_links.add(link)
                self._note_link_readers(link, (layer.model,))
        for parent, link in layer.model._meta.parents.items():
            if link is not None:  # saved through the parent class, the child's row changes
                self._add_dependency(parent, layer.model, link.name)

    def _note_subtree_readers(self) -> None:
        """A ``SerializerMethodField`` may read its instance's whole subtree: by default
        a change anywhere below a record with one re-evaluates it."""
        for layer in self.layers.values():
            if not any(
                isinstance(f, serializers.SerializerMethodField)
                for f in layer.flat_serializer.fields.values()
            ):
                continue
            stack: list[tuple[Layer, str]] = [(layer, "")]
            seen = {layer.instance_type}
            while stack:
                current, path = stack.pop()
                for edge in current.edges:
                    if edge.parent_lookup is None or edge.child.instance_type in seen:
                        continue
                    seen.add(edge.child.instance_type)
                    child_path = f"{path}__{edge.parent_lookup}" if path else edge.parent_lookup
                    self._add_dependency(edge.child.model, layer.model, child_path)
                    stack.append((edge.child, child_path))

    def _note_link_readers(
        self, through: type[models.Model], joined: tuple[type[models.Model], ...]
    ) -> None:
        """A row of a link model of the project's own (created, deleted, saved: no
        ``m2m_changed``) changes the rows it joins."""
        if through._meta.auto_created:
            return  # Django's own link rows change only through m2m_changed
        fk: Any  # a ForeignKey, read duck-typed
        for fk in through._meta.concrete_fields:
            target = fk.related_model if fk.many_to_one else None
            for model in joined:
                if isinstance(target, type) and issubclass(model, target):
                    self._add_dependency(through, model, fk.related_query_name())

    def _depend(self, holder: type[models.Model], path: str, where: str) -> None:
        """``holder``'s records read the rows along ``path`` (each step of it)."""
        steps = walk(holder, path, where)
        parts = path.split("__")
        for index, (_, reached) in enumerate(steps):
            self._add_dependency(reached, holder, "__".join(parts[: index + 1]))

    def _add_dependency(
        self, origin: type[models.Model], holder: type[models.Model], path: str
    ) -> None:
        concrete = cast(type[models.Model], origin._meta.concrete_model)
        readers = self.dependencies.setdefault(concrete, [])
        if (holder, path) not in readers:
            readers.append((holder, path))

    def _layer_for(
        self,
        serializer_class: type[serializers.ModelSerializer],
        via: tuple[Layer, str] | None = None,
    ) -> Layer:
        instance_type = instance_type_of(serializer_class)
        type_name = serializer_class.__name__
        if via is not None and made_by_depth(serializer_class):
            # ``Meta.depth`` makes one class per relation, all named alike: name each
            # after the field that made it.
            parent, field_name = via
            instance_type = f"{parent.instance_type}.{field_name}"
            stem = parent.type_name.removesuffix("Serializer")
            type_name = f"{stem}{pascal(field_name)}Serializer"
        existing = self.layers.get(instance_type)
        if existing is not None:
            if existing.serializer_class is not serializer_class:
                raise ChannelDeclarationError(
                    f"{self.owner}: two serializer classes share the name {instance_type}"
                )
            return existing
        meta = getattr(serializer_class, "Meta", None)
        model = getattr(meta, "model", None)
        if model is None:
            raise ChannelDeclarationError(
                f"{self.owner}: {serializer_class.__name__} has no Meta.model"
            )
        flat = serializer_class(context=serializer_context())
        nested: dict[str, serializers.Field] = {}
        for name, serializer_field in list(flat.fields.items()):
            child = nested_serializer(serializer_field)
            if child is not None:
                nested[name] = serializer_field
                del flat.fields[name]
        refuse_unserved(serializer_class, flat, nested, self.owner)
        layer = Layer(
            serializer_class=serializer_class,
            model=model,
            instance_type=instance_type,
            type_name=type_name,
            flat_serializer=flat,
            user_key_attname=_user_key_attname(serializer_class, model, self.owner),
        )
        self.layers[instance_type] = layer
        self._note_dependencies(layer)
        _plan_flat_queries(layer)
        for name, serializer_field in nested.items():
            child_serializer = nested_serializer(serializer_field)
            assert child_serializer is not None
            child_layer = self._layer_for(type(child_serializer), via=(layer, name))
            edge = _make_edge(layer, child_layer, name, serializer_field, self.owner)
            layer.edges.append(edge)
            child_layer.incoming.append(edge)
        return layer


def _user_key_attname(
    serializer_class: type[serializers.ModelSerializer], model: type[models.Model], owner: str
) -> str | None:
    user_key = getattr(serializer_class.Meta, "user_key", None)
    if user_key is None:
        return None
    try:
        model_field = model._meta.get_field(user_key)
    except Exception as exc:
        raise ChannelDeclarationError(
            f"{owner}: {serializer_class.__name__}.Meta.user_key = {user_key!r} is not a "
            f"field of {model.__name__}"
        ) from exc
    attname = getattr(model_field, "attname", None)
    if attname is None:
        raise ChannelDeclarationError(
            f"{owner}: {serializer_class.__name__}.Meta.user_key must name a concrete field "
            f"(a foreign key to the user model), got {user_key!r}"
        )
    return attname


def _make_edge(parent: Layer, child: Layer, name: str, serializer_field: Any, owner: str) -> Edge:
    many = isinstance(serializer_field, serializers.ListSerializer)
    source = serializer_field.source or name
    where = f"{owner}: {parent.serializer_class.__name__}.{name}"
    if source == "*" or "." in source:
        raise ChannelDeclarationError(
            f"{where}: nested serializers must follow one model relation, got source={source!r}; "
            "declare a @related_property on the model for computed relations"
        )
    attr = getattr(parent.model, source, None)
    if isinstance(attr, RelatedProperty):
        if attr.many is not None and attr.many != many:
            raise ChannelDeclarationError(
                f"{where}: many={many} does not match @related_property(many={attr.many})"
            )
        lookup = attr.reverse_lookup(parent.model, where)
        forward = attr.accessor if isinstance(attr, AccessorProperty) else None
        return Edge(
            name,
            parent,
            child,
            many,
            EdgeKind.PROPERTY,
            child_lookup=lookup,
            parent_lookup=forward,
            source=source,
        )
    relation = relation_named(parent.model, source)
    if relation is None and isinstance(attr, property):
        raise UnknownProperty(
            f"{where}: {parent.model.__name__}.{source} is a plain property; declare it with "
            "@related_property so RxDjango knows which rows it reaches"
        )
    if relation is None:
        raise ChannelDeclarationError(
            f"{where}: {parent.model.__name__}.{source} is not a model relation; "
            "declare a @related_property for computed relations"
        )
    if hasattr(relation, "content_type_field_name"):  # contenttypes' GenericRelation
        raise ChannelDeclarationError(
            f"{where}: {parent.model.__name__}.{source} is a GenericRelation, which "
            "RxDjango cannot follow (its rows are found through a content type); declare "
            "a @related_property on the model that returns them"
        )
    if relation.related_model is not None and not issubclass(
        cast(type[models.Model], child.model._meta.concrete_model),
        relation.related_model._meta.concrete_model,
    ):
        raise ChannelDeclarationError(
            f"{where}: {source} leads to {relation.related_model.__name__}, "
            f"but {child.serializer_class.__name__} serializes {child.model.__name__}"
        )
    if relation.many_to_many:
        if relation.concrete:
            m2m_field, lookup = relation, relation.related_query_name()
        else:
            m2m_field, lookup = relation.field, relation.field.name
        return Edge(
            name,
            parent,
            child,
            True,
            EdgeKind.MANY_TO_MANY,
            child_lookup=lookup,
            m2m_field=m2m_field,
            parent_lookup=relation.name,
        )
    if relation.concrete:  # forward ForeignKey / OneToOneField
        if many:
            raise ChannelDeclarationError(f"{where}: a foreign key cannot be many=True")
        return Edge(
            name,
            parent,
            child,
            False,
            EdgeKind.FORWARD,
            parent_attname=relation.attname,
            parent_lookup=relation.name,
        )
    # Reverse side of a ForeignKey (one_to_many) or a OneToOneField (one_to_one).
    if relation.one_to_many != many:
        raise ChannelDeclarationError(
            f"{where}: {source} is a {'many' if relation.one_to_many else 'single'} relation, "
            f"declare the nested serializer with many={relation.one_to_many}"
        )
    return Edge(
        name,
        parent,
        child,
        many,
        EdgeKind.REVERSE,
        child_attname=relation.field.attname,
        child_lookup=relation.field.name,
        parent_lookup=relation.name,
    )


def _plan_flat_queries(layer: Layer) -> None:
    """Plan select_related / prefetch_related so flat serialization is not N+1."""
    for serializer_field in layer.flat_serializer.fields.values():
        source = cast(str, serializer_field.source)  # the stubs allow a callable; it is a str
        if not source or source == "*":
            continue
        first = source.split(".")[0]
        relation = relation_named(layer.model, first)
        if relation is None:
            continue
        if relation.many_to_many or relation.one_to_many:
            layer.prefetch_related.append(first)
        elif isinstance(serializer_field, serializers.PrimaryKeyRelatedField) and "." not in source:
            continue  # reads the *_id column, no query
        elif relation.concrete or relation.one_to_one:
            layer.select_related.append(first)


def _mark_private(layers: Iterable[Layer]) -> None:
    """Mark the layers that declare ``user_key`` and everything nested below them."""
    stack = [layer for layer in layers if layer.user_key_attname is not None]
    while stack:
        layer = stack.pop()
        if layer.may_be_private:
            continue
        layer.may_be_private = True
        stack.extend(edge.child for edge in layer.edges)


def _topological_order(root: Layer, layers: dict[str, Layer]) -> list[Layer]:
    """Layers parents-first (a cycle is broken at its first visited layer)."""
    order: list[Layer] = []
    state: dict[str, int] = {}

    def visit(layer: Layer) -> None:
        if state.get(layer.instance_type):
            return
        state[layer.instance_type] = 1
        for edge in layer.edges:
            visit(edge.child)
        order.append(layer)

    visit(root)
    for layer in layers.values():
        visit(layer)
    order.reverse()
    return order
