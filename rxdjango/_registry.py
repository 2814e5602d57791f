"""Which channels exist, and what each one declared in its ``Meta``.

A channel's options are parsed once, when its class is created, into a
:class:`ChannelSpec`; its state model (which needs the models) is built once
the apps are ready. Every module below the public ``channels.py`` reads a
channel through its spec, never through ``Meta``, and finds channels here by
id, so nothing below imports the public class.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from django.db import models
from rest_framework import serializers

from ._state_model import StateModel
from .conf import rx_settings
from .exceptions import ChannelDeclarationError
from .operations import OPERATIONS

__all__ = [
    "ChannelSpec",
    "dependents_of",
    "link_models",
    "parse_channel",
    "register",
    "spec_by_id",
    "specs",
    "tracked_models",
    "unregister",
]


@dataclass(eq=False)
class ChannelSpec:
    """A registered channel: its class and its parsed ``Meta`` options."""

    #: The project's ``ContextChannel`` subclass, which builds each connection's
    #: :class:`~rxdjango._contract.Channel` (typed loosely: the class lives above here).
    channel_class: Any
    channel_id: str
    name: str
    #: ``Meta.state``: the serializer instance (a ``ListSerializer`` for a list channel).
    state: Any
    many: bool
    cache_ttl: float | None
    auto_update: bool
    optimize_anchors: bool
    #: ``Meta.writable`` as declared: {serializer class: operations}.
    writable_declared: Mapping[Any, Any]
    #: ``@action`` methods by name, and ``@consumer`` methods by event type (set by
    #: ``ContextChannel`` when the class is created).
    actions: Mapping[str, Any] = field(default_factory=dict)
    consumers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _state_model: StateModel | None = field(default=None, repr=False)
    _writable: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def state_model(self) -> StateModel:
        """The flattened shape of ``Meta.state`` (built on first use, once apps are ready)."""
        built = self._state_model
        if built is None:
            with self._lock:
                if self._state_model is None:
                    state_model = StateModel(self.state, self.name)
                    self._writable = _parse_writable(self, state_model)
                    self._state_model = state_model
                built = self._state_model
        return built

    @property
    def writable(self) -> dict[str, frozenset[str]]:
        """``Meta.writable`` as {instance type: allowed operations}."""
        self.state_model()
        return self._writable

    def cache_ttl_seconds(self) -> float:
        """How long an unwatched anchor stays cached (``RX_CACHE_TTL`` unless declared)."""
        return self.cache_ttl if self.cache_ttl is not None else float(rx_settings.RX_CACHE_TTL)


def parse_channel(cls: type) -> ChannelSpec | None:
    """The spec of a channel class, or None for an abstract one; raises
    ``ChannelDeclarationError`` naming the option that is wrong."""
    meta = getattr(cls, "Meta", None)
    if meta is None:
        raise ChannelDeclarationError(
            f"{cls.__qualname__} must declare `class Meta: state = SomeSerializer()`"
        )
    if cls.__dict__.get("Meta") is meta and meta.__dict__.get("abstract", False):
        return None
    state = getattr(meta, "state", None)
    _check_state(cls, state)
    ttl = getattr(meta, "cache_ttl", None)
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ChannelDeclarationError(
            f"{cls.__qualname__}.Meta.cache_ttl must be a positive number of seconds or None, "
            f"got {ttl!r}"
        )
    many = isinstance(state, serializers.ListSerializer)
    auto_update = bool(getattr(meta, "auto_update", False))
    if auto_update and not many:
        raise ChannelDeclarationError(
            f"{cls.__qualname__}.Meta.auto_update needs a list channel (state many=True)"
        )
    writable = getattr(meta, "writable", None) or {}
    if not isinstance(writable, dict):
        raise ChannelDeclarationError(
            f"{cls.__qualname__}.Meta.writable must be a dict "
            "{SerializerClass: [SAVE, CREATE, DELETE]}"
        )
    return ChannelSpec(
        channel_class=cls,
        channel_id=f"{cls.__module__}.{cls.__qualname__}",
        name=cls.__qualname__,
        state=state,
        many=many,
        cache_ttl=None if ttl is None else float(ttl),
        auto_update=auto_update,
        optimize_anchors=bool(getattr(meta, "optimize_anchors", False)),
        writable_declared=dict(writable),
    )


def _check_state(cls: type, state: Any) -> None:
    child = state.child if isinstance(state, serializers.ListSerializer) else state
    if isinstance(state, type):
        raise ChannelDeclarationError(
            f"{cls.__qualname__}.Meta.state must be a serializer instance: "
            f"write `state = {state.__name__}()`"
        )
    if not isinstance(child, serializers.ModelSerializer):
        raise ChannelDeclarationError(
            f"{cls.__qualname__}.Meta.state must be a ModelSerializer instance, "
            f"got {type(state).__name__ if state is not None else 'nothing'}"
        )


def _parse_writable(spec: ChannelSpec, state_model: StateModel) -> dict[str, frozenset[str]]:
    """``Meta.writable`` as {instance type: operations}; raises on declaration mistakes."""
    by_class = {layer.serializer_class: layer for layer in state_model.layers.values()}
    result: dict[str, frozenset[str]] = {}
    for serializer_class, operations in spec.writable_declared.items():
        layer = by_class.get(serializer_class)
        label = f"{spec.name}.Meta.writable"
        if layer is None:
            name = getattr(serializer_class, "__name__", repr(serializer_class))
            raise ChannelDeclarationError(
                f"{label}: {name} is not a serializer of this channel's state tree"
            )
        if isinstance(operations, str) or not isinstance(operations, Iterable):
            raise ChannelDeclarationError(
                f"{label}[{serializer_class.__name__}] must be a list "
                "of operations from rxdjango.operations"
            )
        operations = list(operations)
        wrong = [op for op in operations if op not in OPERATIONS]
        if wrong:
            raise ChannelDeclarationError(
                f"{label}[{serializer_class.__name__}]: {wrong[0]!r} "
                "is not SAVE, CREATE or DELETE (from rxdjango.operations)"
            )
        result[layer.instance_type] = frozenset(operations)
    return result


# -- the registry -----------------------------------------------------------------------

_specs: dict[str, ChannelSpec] = {}
_lock = threading.Lock()
_tracked: frozenset[type[models.Model]] | None = None
_dependents: dict[type[models.Model], list[tuple[type[models.Model], str]]] | None = None


def register(spec: ChannelSpec) -> None:
    global _tracked, _dependents
    with _lock:
        _specs[spec.channel_id] = spec
        _tracked = _dependents = None


def unregister(channel_class: type) -> None:
    """Forget a channel (tests that declare throwaway channels)."""
    global _tracked, _dependents
    with _lock:
        for channel_id, spec in list(_specs.items()):
            if spec.channel_class is channel_class:
                del _specs[channel_id]
        _tracked = _dependents = None


def spec_by_id(channel_id: str) -> ChannelSpec | None:
    with _lock:
        return _specs.get(channel_id)


def specs() -> list[ChannelSpec]:
    """Every registered channel, in registration order."""
    with _lock:
        return list(_specs.values())


def tracked_models() -> frozenset[type[models.Model]]:
    """Concrete models whose changes some registered channel must see."""
    global _tracked
    tracked = _tracked
    if tracked is None:
        found: set[type[models.Model]] = set()
        for spec in specs():
            state_model = spec.state_model()
            found.update(state_model.by_model)
            found.update(state_model.through_models)
            found.update(state_model.dependencies)
            found.update(state_model.value_links)
        tracked = _tracked = frozenset(found)
    return tracked


def link_models() -> frozenset[type[models.Model]]:
    """Many-to-many link models some registered channel's state reads through: a
    change to one of their rows changes the two rows it joins."""
    found: set[type[models.Model]] = set()
    for spec in specs():
        state_model = spec.state_model()
        found.update(state_model.through_models)
        found.update(state_model.value_links)
    return frozenset(found)


def dependents_of(model: type[models.Model]) -> list[tuple[type[models.Model], str]]:
    """(model, query path to ``model``) of the plain values that read ``model``'s rows,
    in every registered channel."""
    global _dependents
    dependents = _dependents
    if dependents is None:
        dependents = {}
        for spec in specs():
            for origin, owners in spec.state_model().dependencies.items():
                known = dependents.setdefault(origin, [])
                known.extend(owner for owner in owners if owner not in known)
        _dependents = dependents
    # concrete_model is typed Optional but set on every model class.
    return dependents.get(cast(type[models.Model], model._meta.concrete_model), [])
