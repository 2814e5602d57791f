"""What the connection machinery uses of a channel: the contract ``ContextChannel`` keeps.

The modules that serve a socket sit below the public ``channels.py`` and never import
it; they type the channel instance of a connection with :class:`Channel`, which
``ContextChannel`` implements (its class-level options are read from the channel's
``ChannelSpec`` in ``_registry``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._state_model import StateModel

__all__ = ["Channel"]


class Channel(Protocol):
    """One connection's channel: who is connected, and the project's hooks."""

    channel_id: str
    many: bool
    user: Any
    kwargs: dict[str, Any]

    @property
    def user_id(self) -> Any: ...

    @staticmethod
    def has_permission(user: Any, **kwargs: Any) -> Any: ...

    @classmethod
    def state_model(cls) -> StateModel: ...

    def get_instance_id(self, **kwargs: Any) -> Any: ...

    def list_instances(self, **kwargs: Any) -> Any: ...

    def on_connect(self, tstamp: float | None) -> Any: ...

    def on_disconnect(self) -> Any: ...

    def is_visible(self, instance_id: Any) -> Any: ...

    def can_save(self, instance: Any, data: dict[str, Any]) -> Any: ...

    def can_create(self, model_class: type, parent: Any, data: dict[str, Any]) -> Any: ...

    def can_delete(self, instance: Any) -> Any: ...
