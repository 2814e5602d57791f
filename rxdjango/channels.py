"""``ContextChannel``: declare a piece of state that browsers keep in sync.

    class JobChannel(ContextChannel):
        class Meta:
            state = JobSerializer()          # many=True makes a list channel

        @staticmethod
        def has_permission(user, job_id):
            return Job.objects.filter(pk=job_id, project__participants__user=user).exists()

Route it with ``JobChannel.as_asgi()`` in your ``websocket_urlpatterns``. One
instance of the class exists per connected client (``self.user``,
``self.kwargs``); class-level methods act on every client of an anchor.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import async_to_sync
from django.apps import apps
from django.db import models, router

from . import _codec, _registry
from ._access import revoke
from ._awaitable import Done, done_or_running
from ._backends import get_backend
from ._consumer import ChannelConsumer
from ._dispatch import ActionSpec, collect_actions, collect_consumers
from ._layers import SYSTEM_EVENT, SYSTEM_GROUP, cross_process_layer
from ._loader import fetch_layer
from ._protocol import NOTIFICATION_TYPE, CloseCode, Reply
from ._registry import ChannelSpec
from ._runtime import runtime_defaults
from ._signal_source import record_change
from ._state_model import wire_pk
from .exceptions import ChannelDeclarationError, UnknownRuntimeVar

if TYPE_CHECKING:
    from ._state_model import StateModel

__all__ = ["ContextChannel", "broadcast_system_message"]

_background: set[asyncio.Task[Any]] = set()


class ContextChannel:
    """Base class of every channel. Subclasses declare ``Meta.state``.

    ``Meta`` options: ``state`` (required, a ``ModelSerializer`` instance, with
    ``many=True`` for a list channel), ``abstract`` (a base class that is not
    registered), ``cache_ttl`` (seconds an unwatched anchor stays cached),
    ``auto_update`` and ``optimize_anchors`` (see docs/channels.md).
    """

    channel_id: ClassVar[str]
    many: ClassVar[bool]
    #: The parsed options (None on an abstract channel).
    spec: ClassVar[ChannelSpec | None] = None
    _actions: ClassVar[dict[str, ActionSpec]] = {}
    _consumers: ClassVar[dict[str, tuple[str, ...]]] = {}
    _runtime_defaults: ClassVar[dict[str, Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._actions = collect_actions(cls)
        cls._consumers = collect_consumers(cls)
        cls._runtime_defaults = runtime_defaults(cls)
        spec = _registry.parse_channel(cls)
        cls.spec = spec
        if spec is None:
            return  # abstract
        declared = cls.__dict__.get("has_permission")
        if declared is not None and not isinstance(declared, staticmethod):
            raise ChannelDeclarationError(
                f"{cls.__qualname__}.has_permission must be a @staticmethod "
                "taking (user, **route_kwargs)"
            )
        if spec.auto_update and cls.is_visible is ContextChannel.is_visible:
            raise ChannelDeclarationError(
                f"{cls.__qualname__}.Meta.auto_update needs is_visible(self, instance_id) "
                "to decide which new instances each client sees"
            )
        spec.actions, spec.consumers = cls._actions, cls._consumers
        cls.channel_id = spec.channel_id
        cls.many = spec.many
        if apps.ready:
            spec.state_model()  # surface declaration errors at import time
        _registry.register(spec)

    # -- per connection -----------------------------------------------------------

    def __init__(self, connection: ChannelConsumer, user: Any, kwargs: dict[str, Any]) -> None:
        self._connection = connection
        self.user = user
        self.kwargs = dict(kwargs)
        self._runtime_state = copy.deepcopy(self._runtime_defaults or {})

    @property
    def user_id(self) -> Any:
        return getattr(self.user, "pk", None)

    @staticmethod
    def has_permission(user: Any, **kwargs: Any) -> bool:
        """Whether ``user`` may open this channel with these route kwargs.

        Only a return value of exactly ``True`` grants access. May be a
        coroutine function; a plain function may use the ORM.
        """
        return True

    def get_instance_id(self, **kwargs: Any) -> Any:
        """The anchor's primary key for a single-instance channel (first route kwarg)."""
        if not kwargs:
            raise ChannelDeclarationError(
                f"{type(self).__qualname__} has no route kwargs; override get_instance_id()"
            )
        return next(iter(kwargs.values()))

    def list_instances(self, **kwargs: Any) -> Any:
        """Anchors of a list channel: a queryset of the anchor model, or a list of ids."""
        raise NotImplementedError(
            f"{type(self).__qualname__} is a list channel (state many=True) and must "
            "implement list_instances(self, **kwargs)"
        )

    def on_connect(self, tstamp: float | None) -> Any:
        """Called after authentication; ``tstamp`` is the client's ``lastUpdate``."""

    def on_disconnect(self) -> Any:
        """Called when the client disconnects."""

    async def send(
        self, data: Any = None, *, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Send a JSON value (or a ready JSON string) to this client; or, as Channels'
        consumers do, ``text_data=`` (a text frame as is) or ``bytes_data=`` (binary)."""
        given = [value is not None for value in (data, text_data, bytes_data)]
        if sum(given) != 1:
            raise TypeError("send() takes one of data, text_data= or bytes_data=")
        if text_data is not None and not isinstance(text_data, str):
            raise TypeError(f"text_data must be a str, got {type(text_data).__name__}")
        if bytes_data is not None and not isinstance(bytes_data, bytes | bytearray):
            raise TypeError(f"bytes_data must be bytes, got {type(bytes_data).__name__}")
        if bytes_data is not None:
            self._connection.send_frame(bytes(bytes_data))
        else:
            self._connection.send_frame(text_data if text_data is not None else data)

    async def group_add(self, group: str) -> None:
        """Join a channel-layer group; left automatically on disconnect."""
        await self._connection.group_add(group)

    # -- runtime state ----------------------------------------------------------------

    @property
    def runtime_state(self) -> Mapping[str, Any]:
        """The connection's runtime variables (read-only: use ``set_runtime_var``)."""
        return MappingProxyType(self._runtime_state)

    @property
    def anchor_ids(self) -> list[Any]:
        """The anchors this client holds, in order (one for a single-instance channel)."""
        return self._connection.anchor_ids

    def set_runtime_var(self, name: str, value: Any) -> Done:
        """Set a variable declared in ``RuntimeState`` and send it to the client.

        Safe to call from the event loop or from ORM code in a worker thread. A plain
        call; awaiting the result works too.
        """
        if name not in self._runtime_state:
            declared = ", ".join(sorted(self._runtime_state)) or "none"
            raise UnknownRuntimeVar(
                f"{type(self).__qualname__}.RuntimeState has no variable {name!r} "
                f"(declared: {declared})"
            )
        self._runtime_state[name] = value
        self._connection.send_frame({"type": Reply.RUNTIME_VAR, "var": name, "value": value})
        return Done()

    def serialize_instance(self, instance: models.Model, tstamp: float = 0) -> Any:
        """``instance`` as a flat record of this channel's state (its nested relations as
        ids), as the original RxDjango's method of that name gave it. A plain call from
        synchronous code; from async code, ``await`` it (it runs in a worker thread)."""
        layers = type(self).state_model().layers_for_model(type(instance))
        if not layers:
            raise TypeError(f"{type(instance).__name__} is not part of {type(self).__qualname__}")
        layer = layers[0]

        def serialize() -> dict[str, Any] | None:
            found = fetch_layer(layer, [instance.pk])
            if not found:
                return None  # not in the database (any more)
            [record] = found.values()
            return {
                **record.data,
                "_instance_type": layer.instance_type,
                "_tstamp": tstamp,
                "_operation": "initial_state",
            }

        return done_or_running(serialize)

    # -- write authorization (the third layer, after Meta.writable and the context) ------

    def can_save(self, instance: Any, data: dict[str, Any]) -> Any:
        """Whether this user may apply ``data`` to ``instance`` (row locked). Only True allows."""
        return False

    def can_create(self, model_class: type, parent: Any, data: dict[str, Any]) -> Any:
        """Whether this user may create a ``model_class`` child of ``parent``. Only True allows."""
        return False

    def can_delete(self, instance: Any) -> Any:
        """Whether this user may delete ``instance`` (row locked). Only True allows."""
        return False

    # -- list channels ------------------------------------------------------------------

    def is_visible(self, instance_id: Any) -> Any:
        """With ``Meta.auto_update``: whether a newly created anchor joins this client's list.

        Only ``True`` adds it. May be a coroutine function or use the ORM.
        """
        return False

    async def add_instance(self, instance_id: Any, at_beginning: bool = False) -> bool:
        """Add an anchor to this client's list and send its state; False if absent or present."""
        self._require_list("add_instance")
        return await self._connection.add_anchor(instance_id, at_beginning)

    async def remove_instance(self, instance_id: Any) -> bool:
        """Remove an anchor from this client's list (the client receives its delete)."""
        self._require_list("remove_instance")
        return await self._connection.remove_anchor(instance_id)

    async def clear(self) -> None:
        """Remove every anchor from this client's list."""
        self._require_list("clear")
        await self._connection.clear_anchors()

    def _require_list(self, method: str) -> None:
        if not self.many:
            raise TypeError(f"{method}() is for list channels (Meta.state with many=True)")

    # -- class level ----------------------------------------------------------------

    @classmethod
    def _spec(cls) -> ChannelSpec:
        if cls.spec is None:
            raise ChannelDeclarationError(f"{cls.__qualname__} is abstract")
        return cls.spec

    @classmethod
    def state_model(cls) -> StateModel:
        """The flattened shape of ``Meta.state`` (built once, when apps are ready)."""
        return cls._spec().state_model()

    @classmethod
    def writable(cls) -> dict[str, frozenset[str]]:
        """``Meta.writable`` as {instance type: allowed operations}."""
        return cls._spec().writable

    @classmethod
    def get_registered_channels(cls) -> set[type[ContextChannel]]:
        return {spec.channel_class for spec in _registry.specs()}

    @classmethod
    def get_cache_ttl(cls) -> float:
        return cls._spec().cache_ttl_seconds()

    @classmethod
    def as_asgi(cls) -> Callable[..., Any]:
        """The ASGI application serving this channel, for ``websocket_urlpatterns``."""
        if cls.spec is None:
            raise ChannelDeclarationError(f"{cls.__qualname__} is abstract and cannot be routed")
        return ChannelConsumer.as_asgi(channel_class=cls)

    @classmethod
    def broadcast_instance(
        cls, anchor_id: Any, instance: models.Model, operation: str = "update"
    ) -> Done | asyncio.Task[None]:
        """Propagate a change that emitted no signal (``QuerySet.update``, ``bulk_create``,
        raw SQL). The instance is re-read from the database after the current
        transaction commits, so ``operation`` ('create', 'update' or 'delete') only
        documents intent. Every anchor holding the instance is updated, including
        ``anchor_id``'s. A plain call; awaiting the result works too (on an event loop
        the work runs in a worker thread, and awaiting waits for it).
        """
        if operation not in ("create", "update", "delete"):
            raise ValueError(f"operation must be 'create', 'update' or 'delete', got {operation!r}")
        model = type(instance)

        def record() -> None:
            using = router.db_for_write(model)
            record_change(model, [instance.pk], using)  # and the values computed from it

        return done_or_running(record)

    @classmethod
    def broadcast_notification(
        cls, anchor_id: Any, data: dict[str, Any], user_id: Any = None
    ) -> Done:
        """Send ``data`` to every client of the anchor, or only to ``user_id``'s clients.

        Callable from sync code (views, commands, tasks) and async code; it does not
        block and does not wait for a transaction. A plain call; awaiting works too.
        """
        if not isinstance(data, dict):
            raise TypeError(f"notification data must be a dict, got {type(data).__name__}")
        frame = _codec.encode([{**data, "_instance_type": NOTIFICATION_TYPE}])
        get_backend().notify((cls.channel_id, cls._anchor_pk(anchor_id)), frame, user_id)
        return Done()

    @classmethod
    def _anchor_pk(cls, anchor_id: Any) -> Any:
        return wire_pk(cls.state_model().anchor_model, anchor_id)

    @classmethod
    def clear_cache(cls, anchor_id: Any) -> Done | asyncio.Task[bool]:
        """Drop the cached state of an anchor (watched anchors reload); the result is
        true if it was cached (hot). A plain call returns at once with the result
        (truthy like that bool); from async code, ``await`` it (the work runs in a
        worker thread)."""
        ref = (cls.channel_id, cls._anchor_pk(anchor_id))
        return done_or_running(lambda: get_backend().clear(ref))

    @classmethod
    def revoke(cls, user_id: Any, anchor_id: Any = None) -> Done:
        """Close ``user_id``'s sockets on this channel (only those of ``anchor_id``, if
        given) with 4403, in every process, once the current transaction commits.

        Call it when access ends in a way ``has_permission`` would see (a membership
        removed), so the user's open sockets stop at once rather than at their next
        re-check. A plain call; awaiting the result works too.
        """
        anchor = None if anchor_id is None else cls._anchor_pk(anchor_id)
        model = cls.state_model().anchor_model
        revoke(user_id, CloseCode.FORBIDDEN, cls.channel_id, anchor, router.db_for_write(model))
        return Done()

    @classmethod
    def tracked_models(cls) -> frozenset[type[models.Model]]:
        """Concrete models whose changes some registered channel must see."""
        return _registry.tracked_models()


def broadcast_system_message(message: Any, *, maintenance: bool = False) -> None:
    """Send a ``system`` (or ``maintenance``) message to every client of every channel.

    ``maintenance`` tells clients to expect a restart and reconnect. With a
    channel layer that spans processes (``CHANNEL_LAYERS`` on Redis) the message
    reaches the clients of every process; otherwise those of this process.
    Callable from sync and async code; it does not wait for delivery.
    """
    kind = Reply.MAINTENANCE if maintenance else Reply.SYSTEM
    frame = _codec.encode({"type": kind, "source": kind, "message": message})
    backend = get_backend()
    layer = None if backend.spans_processes else cross_process_layer()
    if layer is None:
        backend.broadcast_all(frame)
        return
    event = {"type": SYSTEM_EVENT, "frame": frame}
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(layer.group_send)(SYSTEM_GROUP, event)
    else:
        task = loop.create_task(layer.group_send(SYSTEM_GROUP, event))
        _background.add(task)
        task.add_done_callback(_background.discard)
