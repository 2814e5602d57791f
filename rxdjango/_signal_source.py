"""The signal change source: model signals say which rows a transaction touched.

It hands them to :func:`~rxdjango._committed.propagate_committed` once the
transaction commits (the change-source seam; a database-side source feeds the same
function).

Signals (``post_save``, ``post_delete``, ``m2m_changed``) only record *which*
instances were touched, in a per-thread, per-database buffer. The buffer is
flushed by one ``on_commit`` callback, so several saves of one instance become
one record carrying the final committed state, read fresh from the database at
commit time.

Rollbacks cannot poison the buffer:

* the buffer is valid only while its ``on_commit`` callback is still pending on
  the connection; after a full rollback (or the rollback of the savepoint it
  was registered in) Django has discarded the callback, and the next change
  starts a new buffer and registers a new callback;
* a change recorded inside a savepoint that was rolled back while the buffer
  survived is re-read at commit time, finds the committed row unchanged (or
  absent), and produces no record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any, cast

from django.db import connections, models, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from ._capture import capturing
from ._committed import propagate_committed
from ._drain import drain
from ._registry import dependents_of, tracked_models
from ._relay import relaying

__all__ = ["connect_signals", "disconnect_signals", "record_change"]

logger = logging.getLogger("rxdjango")

_local = threading.local()


class _Buffer:
    """Instances touched in one transaction, flushed by its on_commit callback."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.touched: dict[type[models.Model], set[Any]] = {}
        self.created: dict[type[models.Model], set[Any]] = {}

    def add(self, model: type[models.Model], pks: Iterable[Any], created: bool) -> None:
        # concrete_model is typed Optional but set on every model class.
        concrete = cast(type[models.Model], model._meta.concrete_model)
        pks = set(pks)
        self.touched.setdefault(concrete, set()).update(pks)
        if created:
            self.created.setdefault(concrete, set()).update(pks)

    def __call__(self) -> None:
        buffers = getattr(_local, "buffers", {})
        if buffers.get(self.using) is self:
            del buffers[self.using]
        _propagate(self.using, self.touched, self.created)


def _propagate(
    using: str,
    touched: dict[type[models.Model], set[Any]],
    created: dict[type[models.Model], set[Any]],
) -> None:
    """Right after the commit, in this thread. With change capture, a process that
    relays the log propagates it (which now holds this transaction's rows too) with
    what the signals saw; one that does not (a command, a worker) leaves the log to
    the serving processes' relays. Without capture, the signals are all there is."""
    if relaying(using):
        drain(using, touched, created)
    elif not capturing(using):
        propagate_committed(touched, created)


def _pending(connection: Any, buffer: _Buffer) -> bool:
    return any(entry[1] is buffer for entry in connection.run_on_commit)


def record_change(
    model: type[models.Model], pks: Iterable[Any], using: str, created: bool = False
) -> None:
    """Note that ``pks`` of ``model`` changed (were ``created``); propagate after the commit."""
    connection = connections[using]
    if not connection.in_atomic_block:
        # Autocommit: already committed.
        touched = {cast(type[models.Model], model._meta.concrete_model): set(pks)}
        _propagate(using, touched, touched if created else {})
        return
    buffers: dict[str, _Buffer] = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(using)
    if buffer is None or not _pending(connection, buffer):
        buffer = _Buffer(using)
        buffers[using] = buffer
        transaction.on_commit(buffer, using=using)
    buffer.add(model, pks, created)


# -- signal receivers ----------------------------------------------------------------


def _tracked(model: type[models.Model]) -> bool:
    return model._meta.concrete_model in tracked_models()


def _on_save(sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any) -> None:
    if kwargs.get("raw") or not _tracked(sender):
        return
    record_change(sender, [instance.pk], using, created=bool(kwargs.get("created")))
    _record_remembered(("row", id(instance)), using)  # the values it counted in


def _on_delete(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    if _tracked(sender) and instance.pk is not None:
        record_change(sender, [instance.pk], using)
        _record_remembered(("row", id(instance)), using)


def _before_change(
    sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any
) -> None:
    """Before a row is saved or deleted: the values it counted in so far, recorded once
    the write is done (in autocommit a record now would be read before the write)."""
    if kwargs.get("raw") or instance.pk is None or instance._state.adding:
        return
    _remember_dependents(("row", id(instance)), sender, [instance.pk], using)


def _remember_dependents(
    key: tuple[Any, ...], model: type[models.Model], pks: Iterable[Any], using: str
) -> None:
    found = _dependent_rows(model, pks, using)
    if found:
        before: dict[tuple[Any, ...], list[Any]] = _local.__dict__.setdefault("before", {})
        before.setdefault(key, []).extend(found)


def _record_remembered(key: tuple[Any, ...], using: str) -> None:
    for owner, pks in _local.__dict__.get("before", {}).pop(key, []):
        record_change(owner, pks, using)


def _dependent_rows(
    model: type[models.Model], pks: Iterable[Any], using: str
) -> list[tuple[type[models.Model], list[Any]]]:
    rows = []
    for owner, path in dependents_of(model):
        owners = owner._default_manager.using(using).filter(**{f"{path}__in": list(pks)})
        found = list(owners.values_list("pk", flat=True).distinct())
        if found:
            rows.append((owner, found))
    return rows


def _on_m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    model: type[models.Model],
    pk_set: set[Any] | None,
    using: str,
    **kwargs: Any,
) -> None:
    instance_tracked = _tracked(type(instance))
    other_tracked = _tracked(model)
    if not (instance_tracked or other_tracked):
        return
    key = (sender, id(instance))
    clearing: dict[Any, set[Any]] = _local.__dict__.setdefault("clearing", {})
    if action == "pre_clear":
        # post_clear does not say which rows were removed: remember them now.
        clearing[key] = set(_related_pks(sender, instance, model))
        _m2m_dependents(key, instance, model, clearing[key], using)
        return
    if action in ("pre_add", "pre_remove"):
        _m2m_dependents(key, instance, model, pk_set or set(), using)
        return
    if action == "post_clear":
        pk_set = clearing.pop(key, set())
    elif action not in ("post_add", "post_remove"):
        return
    if instance_tracked:
        record_change(type(instance), [instance.pk], using)
    if other_tracked and pk_set:
        record_change(model, pk_set, using)
    _record_remembered(("m2m", *key), using)  # values read through it before the change


def _m2m_dependents(
    key: tuple[Any, ...],
    instance: models.Model,
    model: type[models.Model],
    pks: set[Any],
    using: str,
) -> None:
    """Before a many-to-many change: the values read through it, recorded after it."""
    _remember_dependents(("m2m", *key), type(instance), [instance.pk], using)
    if pks:
        _remember_dependents(("m2m", *key), model, pks, using)


def _related_pks(
    through: type[models.Model], instance: models.Model, other: type[models.Model]
) -> list[Any]:
    relation: Any  # a field or a reverse relation, read duck-typed
    for relation in type(instance)._meta.get_fields():
        if not relation.many_to_many:
            continue
        m2m = relation if relation.concrete else relation.field
        if m2m.remote_field.through is not through:
            continue
        accessor = relation.name if relation.concrete else relation.get_accessor_name()
        if accessor:
            return list(getattr(instance, accessor).values_list("pk", flat=True))
    return []


_RECEIVERS = (
    (pre_save, _before_change, "rxdjango.pre_save"),
    (pre_delete, _before_change, "rxdjango.pre_delete"),
    (post_save, _on_save, "rxdjango.post_save"),
    (post_delete, _on_delete, "rxdjango.post_delete"),
    (m2m_changed, _on_m2m_changed, "rxdjango.m2m_changed"),
)


def connect_signals() -> None:
    for signal, receiver, uid in _RECEIVERS:
        signal.connect(receiver, dispatch_uid=uid, weak=False)


def disconnect_signals() -> None:
    for signal, _receiver, uid in _RECEIVERS:
        signal.disconnect(dispatch_uid=uid)
