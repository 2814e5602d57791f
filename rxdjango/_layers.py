"""The channel layer used for ``group_add`` and ``@consumer`` events.

The one configured in ``CHANNEL_LAYERS`` if any; otherwise an in-memory layer
for this process, so a project with no settings beyond ``INSTALLED_APPS`` works.
"""

from __future__ import annotations

import threading

from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer

__all__ = ["SYSTEM_EVENT", "SYSTEM_GROUP", "cross_process_layer", "get_layer"]

#: Channel-layer group every admitted connection joins when the layer spans processes.
SYSTEM_GROUP = "rxdjango.system"
SYSTEM_EVENT = "rxdjango.system"

_default: InMemoryChannelLayer | None = None
_lock = threading.Lock()


def get_layer(alias: str) -> BaseChannelLayer:
    configured = get_channel_layer(alias)
    if configured is not None:
        return configured
    global _default
    with _lock:
        if _default is None:
            _default = InMemoryChannelLayer(capacity=1000)
        return _default


def cross_process_layer(alias: str = "default") -> BaseChannelLayer | None:
    """The configured channel layer if it reaches other processes (not in-memory)."""
    configured = get_channel_layer(alias)
    if configured is None or isinstance(configured, InMemoryChannelLayer):
        return None
    return configured
