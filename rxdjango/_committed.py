"""Committed changes become propagation here: the one entry point of every change source.

A change source (the model signals of :mod:`._signal_source`, the change log that
:mod:`._relay` reads) calls :func:`propagate_committed` after a transaction commits
with the rows it touched, by concrete model; the rows whose computed values read
those are added here (:func:`with_readers`). Each channel whose state reads one of
those models propagates them (its backend re-reads the rows); list channels with
``Meta.auto_update`` are offered the anchor rows that were created.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from django.db import models

from . import _metrics, _priority, _registry, _telemetry
from ._backends import Backend, get_backend
from ._registry import ChannelSpec
from ._state_model import pk_repr

__all__ = ["propagate_committed"]

logger = logging.getLogger("rxdjango")


def propagate_committed(
    touched: dict[type[models.Model], set[Any]],
    created: dict[type[models.Model], set[Any]] | None = None,
) -> None:
    """Propagate committed changes to every channel whose state includes them, then
    offer created anchor rows to list channels with ``Meta.auto_update``.

    Runs in the committing thread, after the commit. Errors are logged, never
    raised: the caller's transaction has already committed.
    """
    backend = get_backend()
    _metrics.count(flushes=1)
    rows = sum(len(pks) for pks in touched.values())
    with _telemetry.propagating(), _metrics.counting_queries(), _priority.propagating(rows):
        _propagate(backend, _registry.specs(), with_readers(touched), created)


def with_readers(
    touched: dict[type[models.Model], set[Any]],
) -> dict[type[models.Model], set[Any]]:
    """``touched`` plus the rows whose values read touched rows (dotted ``source=``
    paths, related fields, method fields, ``related_property`` values, children of
    multi-table inheritance): one query per changed model and reader, whatever the
    source of the change, and none for a model nobody reads that way.

    The rows that read a row *before* it changed (a task moved to another job) are
    the change source's to add (:mod:`._signal_source` remembers them).
    """
    result = {model: set(pks) for model, pks in touched.items()}
    frontier = dict(result)
    while frontier:
        found: dict[type[models.Model], set[Any]] = {}
        for model, pks in frontier.items():
            for holder, path in _registry.dependents_of(model):
                rows = holder._default_manager.filter(**{f"{path}__in": list(pks)})
                concrete = cast(type[models.Model], holder._meta.concrete_model)
                new = set(rows.values_list("pk", flat=True).distinct()) - result.get(
                    concrete, set()
                )
                if new:
                    found.setdefault(concrete, set()).update(new)
        for model, pks in found.items():
            result.setdefault(model, set()).update(pks)
        frontier = found
    return result


def _propagate(
    backend: Backend,
    channels: Iterable[ChannelSpec],
    touched: dict[type[models.Model], set[Any]],
    created: dict[type[models.Model], set[Any]] | None,
) -> None:
    for channel in channels:
        # One channel's failure (logged; its clients reload) does not starve the others.
        try:
            per_type = _touched_layers(channel, touched)
            if per_type:
                backend.process(channel, per_type)
            if created and channel.auto_update:
                anchor_model = channel.state_model().anchor_model
                # concrete_model is typed Optional but set on every model class.
                concrete = cast(type[models.Model], anchor_model._meta.concrete_model)
                new_anchors = created.get(concrete)
                if new_anchors:
                    backend.offer_created(channel, new_anchors)
        except Exception:
            logger.exception(
                "rxdjango: failed to propagate committed changes to %s", channel.channel_id
            )


def _touched_layers(
    channel: ChannelSpec, touched: dict[type[models.Model], set[Any]]
) -> dict[str, set[Any]]:
    """``touched`` by the channel's instance types, each pk as records are keyed (a
    UUID as its string)."""
    state_model = channel.state_model()
    result: dict[str, set[Any]] = {}
    for model, pks in touched.items():
        wire = {pk_repr(pk) for pk in pks}
        for layer in state_model.layers_for_model(model):
            result.setdefault(layer.instance_type, set()).update(wire)
    return result
