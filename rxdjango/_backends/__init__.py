"""Backends: where anchors are cached and how their changes reach clients.

``get_backend()`` picks one per process: Redis (:mod:`.redis_backend`) when
``REDIS_URL`` or ``RX_REDIS_CLIENT`` is set, else the embedded one
(:mod:`.memory`). Both implement :class:`~.base.Backend`.
"""

from __future__ import annotations

import threading

from .._hub import hub
from ..conf import rx_settings
from .base import Backend, HeldSnapshot, Snapshot
from .memory import EmbeddedBackend

__all__ = [
    "Backend",
    "EmbeddedBackend",
    "HeldSnapshot",
    "Snapshot",
    "current_backend",
    "get_backend",
    "reset_backend",
]

_backend: Backend | None = None
_backend_lock = threading.Lock()


def get_backend() -> Backend:
    """The process's backend, created on first use."""
    global _backend
    with _backend_lock:
        if _backend is None:
            if rx_settings.REDIS_URL or rx_settings.RX_REDIS_CLIENT:
                # Imported here: redis-py is an optional dependency (the redis extra).
                from .redis_backend import redis_backend

                _backend = redis_backend(hub)
            else:
                _backend = EmbeddedBackend(hub)
        return _backend


def current_backend() -> Backend | None:
    """The backend if one was created (never creates one)."""
    return _backend


def reset_backend() -> None:
    """Forget this process's backend and its local cache (used between tests)."""
    global _backend
    with _backend_lock:
        if _backend is not None:
            _backend.close()
        _backend = None
