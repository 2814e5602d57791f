"""The channel layer used for ``group_add`` and ``@consumer`` events.

The one configured in ``CHANNEL_LAYERS`` if any; otherwise an in-memory layer
for this process, so a project with no settings beyond ``INSTALLED_APPS`` works.
"""

from __future__ import annotations

import threading

from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer

__all__ = ["get_layer"]

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
