"""Client writes (optimistic updates): save, create and delete over the socket.

Checks, in the order the protocol fixes; the first that fails answers:

1. the instance type is in the state tree (400);
2. the type and operation are declared in ``Meta.writable`` (403) — before
   any database access;
3. the instance (the parent, for a create) is one this user sees in the
   connection's anchors, read from the database: inside an anchor, and not
   private to another user at any depth (400);
4. every related row the data names is one this user sees there too (400);
5. the data passes the serializer's validation, DB validators included (400,
   with DRF's detail);
6. ``can_save`` / ``can_create`` / ``can_delete`` returns exactly True (403);
   ``can_save`` and ``can_create`` receive the validated data of the fields sent.

A missing id and an id outside what the user sees get the same answer, so a
write cannot probe what exists. Steps 3 to 6 and the write itself run in one
transaction, with the row (or the parent) locked by ``select_for_update``. A
refusal rolls everything back.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import IntegrityError, connections, models, router
from rest_framework import serializers

from ._audience import may_see
from ._backends import get_backend
from ._membership import audience_in
from ._protocol import Operation, Reply, Request, Status, client_value, error_frame
from ._render import visible_data
from ._state_model import EdgeKind, Layer, StateModel, pk_repr
from ._write_turns import writing_transaction
from .exceptions import ClientError, RxDjangoBug, WriteError
from .operations import CREATE, DELETE, OPERATIONS

if TYPE_CHECKING:
    from ._contract import Channel

__all__ = [
    "Write",
    "WriteRefused",
    "is_write",
    "parse_write",
    "perform_write",
    "restoring_records",
]

logger = logging.getLogger("rxdjango")


# Write data is a flat object of field values (a JSONField may nest a little); deeper
# nesting is refused before any serializer field turns it into a string recursively.
MAX_DATA_DEPTH = 64


class WriteRefused(WriteError):
    """A check failed: answer ``status`` with ``message`` (and DRF's ``detail``)."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message, status)
        self.detail = detail


@dataclass(frozen=True)
class Write:
    write_id: Any
    operation: str
    layer: Layer
    instance_id: Any = None
    parent: Layer | None = None
    parent_id: Any = None
    relation: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


# -- parsing ------------------------------------------------------------------------------


def is_write(frame: Any) -> bool:
    return isinstance(frame, dict) and frame.get("type") == Request.WRITE


def response(write_id: Any, **extra: Any) -> dict[str, Any]:
    return {"type": Reply.WRITE_RESPONSE, "writeId": write_id, **extra}


def refusal(write_id: Any, status: int, message: str, detail: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": int(status), "message": message}
    if detail is not None:
        error["detail"] = detail
    return response(write_id, success=False, error=error)


def parse_write(
    frame: dict[str, Any], state_model: StateModel, writable: dict[str, frozenset[str]]
) -> Write | dict[str, Any]:
    """Steps 1 and 2 (no database access): a Write, or the frame to answer with."""
    write_id = frame.get("writeId")
    if write_id is None or isinstance(write_id, bool) or not isinstance(write_id, int | str):
        return error_frame("a write needs a writeId")
    operation = frame.get("operation")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        return refusal(write_id, Status.BAD_REQUEST, f"unknown operation {client_value(operation)}")
    instance_type = frame.get("instanceType")
    layer = state_model.layers.get(instance_type) if isinstance(instance_type, str) else None
    if layer is None:
        return refusal(
            write_id, Status.BAD_REQUEST, f"unknown instance type {client_value(instance_type)}"
        )
    if operation not in writable.get(layer.instance_type, ()):
        return refusal(
            write_id, Status.FORBIDDEN, f"{operation} is not allowed on {layer.instance_type}"
        )
    data = frame.get("data", {})
    if not isinstance(data, dict):
        return refusal(write_id, Status.BAD_REQUEST, "data must be an object")
    if _nested_deeper_than(data, MAX_DATA_DEPTH):
        return refusal(write_id, Status.BAD_REQUEST, "data is nested too deeply")
    if operation == CREATE:
        parent_type = frame.get("parentType")
        parent = state_model.layers.get(parent_type) if isinstance(parent_type, str) else None
        relation = frame.get("relationName")
        if parent is None or "parentId" not in frame or not isinstance(relation, str):
            return refusal(
                write_id, Status.BAD_REQUEST, "a create needs parentType, parentId and relationName"
            )
        return Write(write_id, operation, layer, None, parent, frame["parentId"], relation, data)
    if "instanceId" not in frame:
        return refusal(write_id, Status.BAD_REQUEST, f"a {operation} needs instanceId")
    return Write(write_id, operation, layer, frame["instanceId"], data=data)


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` levels."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# -- performing -----------------------------------------------------------------------------


def perform_write(channel: Channel, anchors: list[Any], write: Write) -> dict[str, Any]:
    """Steps 3 to 6 and the write, in one transaction (synchronous ORM code)."""
    model = write.layer.model
    try:
        with writing_transaction(router.db_for_write(model)):
            instance_id = _perform(channel, anchors, write)
    except WriteRefused as refused:
        return refusal(write.write_id, refused.status, refused.message, refused.detail)
    except IntegrityError:
        # A constraint no validator caught (e.g. a concurrent insert won the race).
        return refusal(write.write_id, Status.BAD_REQUEST, "the data conflicts with existing rows")
    if write.operation == CREATE:
        return response(write.write_id, success=True, instanceId=instance_id)
    return response(write.write_id, success=True)


def _perform(channel: Channel, anchors: list[Any], write: Write) -> Any:
    state_model = channel.state_model()
    if write.operation == CREATE:
        return _create(channel, state_model, anchors, write)
    instance = _visible_row(channel, state_model, anchors, write.layer, write.instance_id)
    if write.operation == DELETE:
        _check_allowed(channel.can_delete, instance)
        instance.delete()
        return None
    serializer = _serializer(write.layer, channel, write.data, instance=instance)
    _check_foreign_keys(channel, state_model, anchors, serializer, write.data)
    _check_valid(serializer)
    _check_allowed(channel.can_save, instance, dict(serializer.validated_data))
    serializer.save()
    return None


def _create(channel: Channel, state_model: StateModel, anchors: list[Any], write: Write) -> Any:
    if write.parent is None:
        raise RxDjangoBug("a create was parsed without its parent")
    edge = next((e for e in write.parent.edges if e.name == write.relation), None)
    if edge is None or edge.child is not write.layer:
        raise WriteRefused(
            Status.BAD_REQUEST,
            f"{client_value(write.relation)} is not a relation of {write.parent.instance_type} "
            f"to {write.layer.instance_type}",
        )
    if edge.kind is not EdgeKind.REVERSE or not edge.many:
        raise WriteRefused(
            Status.BAD_REQUEST,
            f"children cannot be created through {client_value(write.relation)}",
        )
    parent = _visible_row(channel, state_model, anchors, write.parent, write.parent_id)
    data = dict(write.data)
    assert edge.child_lookup is not None  # set on every REVERSE edge
    fixed: dict[str, Any] = {edge.child_lookup: parent}
    # Fields the server decides; put in the data too, so unique_together sees them.
    data_fixed: dict[str, Any] = {edge.child_lookup: parent.pk}
    owner_field = _owner_field(write.layer)
    if owner_field is not None:
        fixed[owner_field] = channel.user
        data_fixed[owner_field] = channel.user_id
    serializer = _serializer(write.layer, channel, {**data, **data_fixed})
    _check_foreign_keys(channel, state_model, anchors, serializer, data)
    _check_valid(serializer)
    sent = {k: v for k, v in serializer.validated_data.items() if k not in fixed}
    _check_allowed(channel.can_create, write.layer.model, parent, sent)
    created = serializer.save(**fixed)
    return pk_repr(created.pk)


def _as_pk(model: type[models.Model], raw: Any) -> Any:
    """``raw`` as a pk of ``model``, or None if it cannot be one (the wrong type)."""
    if isinstance(raw, bool | list | dict):
        return None
    try:
        return model._meta.pk.to_python(raw)
    except (ValidationError, ValueError, TypeError):
        return None


def _storable(model: type[models.Model], pk: Any) -> bool:
    """Whether a row could have ``pk`` (an integer within the column's range): a query
    for one that could not would fail, and no such row exists anyway."""
    if not isinstance(pk, int):
        return True
    field = model._meta.pk
    try:
        low, high = connections[router.db_for_read(model)].ops.integer_field_range(
            field.get_internal_type()
        )
    except KeyError:  # not an integer column
        return True
    return (low is None or pk >= low) and (high is None or pk <= high)


def _outside(layer: Layer, raw_pk: Any) -> WriteRefused:
    """The one answer for an id outside what the user sees: missing, in another anchor,
    another user's private record all read the same."""
    return WriteRefused(
        Status.BAD_REQUEST, f"{layer.instance_type} {client_value(raw_pk)} is not in this context"
    )


def _visible_row(
    channel: Channel,
    state_model: StateModel,
    anchors: list[Any],
    layer: Layer,
    raw_pk: Any,
) -> models.Model:
    """The row ``raw_pk`` of ``layer``, locked, if this user sees it in their anchors."""
    pk = _as_pk(layer.model, raw_pk)
    try:
        if pk is None or not _storable(layer.model, pk):
            raise ObjectDoesNotExist
        instance = layer.model._default_manager.select_for_update().get(pk=pk)
    except ObjectDoesNotExist:
        raise _outside(layer, raw_pk) from None
    if not may_see(
        audience_in(state_model, layer, instance.pk, anchors, instance), channel.user_id
    ):
        raise _outside(layer, raw_pk)
    return instance


def _owner_field(layer: Layer) -> str | None:
    if layer.user_key_attname is None:
        return None
    for model_field in layer.model._meta.concrete_fields:
        if model_field.attname == layer.user_key_attname:
            return model_field.name
    return None


def _serializer(
    layer: Layer,
    channel: Channel,
    data: dict[str, Any],
    instance: models.Model | None = None,
) -> serializers.ModelSerializer:
    serializer_class = _write_serializer_class(layer)
    serializer = serializer_class(
        instance, data=data, partial=instance is not None, context={"channel": channel}
    )
    owner_field = _owner_field(layer)
    changes_owner = (
        owner_field is not None and data.get(owner_field, channel.user_id) != channel.user_id
    )
    if instance is not None and changes_owner:
        raise WriteRefused(Status.BAD_REQUEST, f"{owner_field} cannot be changed")
    return serializer


def _check_valid(serializer: serializers.ModelSerializer) -> None:
    if not serializer.is_valid():
        raise WriteRefused(Status.BAD_REQUEST, "invalid data", serializer.errors)


_write_serializers: dict[str, type[serializers.ModelSerializer]] = {}


def _write_serializer_class(layer: Layer) -> type[serializers.ModelSerializer]:
    """The layer's serializer with nested relations replaced for writing.

    A single forward relation (``developer = ParticipantSerializer()``) is
    written as the related pk; list relations are not writable through data.
    """
    cached = _write_serializers.get(layer.instance_type)
    if cached is not None:
        return cached
    edges = list(layer.edges)

    def get_fields(self: serializers.ModelSerializer) -> dict[str, serializers.Field]:
        fields = super(write_class, self).get_fields()
        for edge in edges:
            if edge.kind is EdgeKind.FORWARD:
                model_field = next(
                    f for f in layer.model._meta.concrete_fields if f.attname == edge.parent_attname
                )
                extra: dict[str, Any] = (
                    {} if model_field.name == edge.name else {"source": model_field.name}
                )
                fields[edge.name] = serializers.PrimaryKeyRelatedField(
                    queryset=edge.child.model._default_manager.all(),
                    allow_null=model_field.null,
                    required=False,
                    **extra,
                )
            else:
                fields.pop(edge.name, None)
        return fields

    write_class: type[serializers.ModelSerializer] = type(
        f"Write{layer.serializer_class.__name__}",
        (layer.serializer_class,),
        {"get_fields": get_fields, "__module__": layer.serializer_class.__module__},
    )
    _write_serializers[layer.instance_type] = write_class
    return write_class


def _check_foreign_keys(
    channel: Channel,
    state_model: StateModel,
    anchors: list[Any],
    serializer: serializers.ModelSerializer,
    data: dict[str, Any],
) -> None:
    """Every related row the client names must be one this user sees in its anchors.

    Checked before the serializer's own validation, so that a missing row and a row
    outside the context get the same answer (DRF would say "does not exist").
    """
    for name, value in data.items():
        field = serializer.fields.get(name)
        if isinstance(field, serializers.ManyRelatedField):
            related, values = field.child_relation, value
        elif isinstance(field, serializers.RelatedField):
            related, values = field, [value]
        else:
            continue
        queryset: Any = getattr(related, "queryset", None)
        target_layers = state_model.layers_for_model(queryset.model) if queryset else []
        if not target_layers or not isinstance(values, list):
            continue  # outside the state: the serializer's queryset decides
        for raw in values:
            if raw is None or isinstance(raw, bool | list | dict):
                continue  # DRF's own type errors
            pk = _as_pk(queryset.model, raw)
            if pk is None:
                continue  # not an id at all: DRF says so
            if not _storable(queryset.model, pk) or not any(
                may_see(audience_in(state_model, layer, pk, anchors), channel.user_id)
                for layer in target_layers
            ):
                raise WriteRefused(
                    Status.BAD_REQUEST,
                    f"{name} points outside this context",
                    {name: ["outside this context"]},
                )


def _check_allowed(hook: Any, *args: Any) -> None:
    """Run a can_* hook (plain or coroutine) inside the transaction; only True allows.
    A hook may also refuse by raising a ClientError (``WriteError``, ``ForbiddenError``)."""
    try:
        allowed = async_to_sync(hook)(*args) if inspect.iscoroutinefunction(hook) else hook(*args)
    except WriteRefused:
        raise
    except ClientError as refused:
        raise WriteRefused(refused.status, refused.message) from None
    if allowed is not True:
        raise WriteRefused(Status.FORBIDDEN, "not allowed")


# -- after a refusal ------------------------------------------------------------------------


def restoring_records(
    channel: Channel, anchors: list[Any], write: Write
) -> list[dict[str, Any]] | None:
    """After a refused save or delete: the record as its writer may see it now, so a
    client that changed its copy before the reply can undo that exactly.

    Read from the cache their anchors are served from. A record that is no longer in
    the writer's view (deleted, moved, private) gets nothing here: the delete that
    took it out of their view was sent to them when that change committed, and a
    refusal must not name an id they may not see (nor answer missing and foreign ids
    differently). Restoring records carry ``_tstamp`` 0: they correct one client's
    copy and are not changes, so they do not move its ``lastUpdate``.
    """
    if write.operation == CREATE:
        return None  # nothing of a refused create exists; its temporary record goes
    layer, user = write.layer, channel.user_id
    state_model = channel.state_model()
    pk = _as_pk(layer.model, write.instance_id)
    if pk is None or not _storable(layer.model, pk):
        return None
    key = (layer.instance_type, pk_repr(pk))
    backend = get_backend()
    for anchor in anchors:
        record = backend.cached_record((channel.channel_id, anchor), key)
        if record is not None and may_see(record.audience, user):
            data = visible_data(record, state_model, user)
            return [{**data, "_tstamp": 0, "_operation": Operation.UPDATE}]
    return None
