"""Graceful shutdown: on SIGTERM a serving process drains before its server stops.

ASGI servers close every WebSocket as soon as they are told to stop (uvicorn with
1012), while writes and actions may still run: a write committed then has no reply,
and its client cannot tell whether it happened. So the first connection of a process
whose event loop runs in the main thread puts a SIGTERM handler in front of the
server's own. On SIGTERM every connection refuses what it has not started (each
request gets a 503 reply), finishes what runs and sends its reply, and closes with
1012 (service restart: the client reconnects at once, to another process); new
sockets are closed with 1012 too, and the health view answers 503. Then, or after
``RX_SHUTDOWN_TIMEOUT`` seconds, the server's handler runs as if the signal had just
arrived. A second SIGTERM stops the process without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, Protocol

from .conf import rx_settings

__all__ = ["Drainable", "draining", "install_handler", "track"]

logger = logging.getLogger("rxdjango")


class Drainable(Protocol):
    def drain(self, deadline: float) -> Awaitable[None]:
        """Refuse what has not started, finish what runs (until ``deadline``, a
        ``time.monotonic()``), then close with 1012 once every reply is sent."""


_connections: weakref.WeakSet[Any] = weakref.WeakSet()
_state = {"installed": False, "draining": False}


def draining() -> bool:
    """Whether this process is shutting down (new sockets and requests go elsewhere)."""
    return _state["draining"]


def track(connection: Drainable) -> None:
    """Drain ``connection`` at shutdown (held weakly: a closed one is simply gone)."""
    _connections.add(connection)


def install_handler() -> None:
    """Put the draining handler in front of the current SIGTERM handler, once per
    process, when called from the main thread (only it may handle signals), whose
    event loop serves the connections."""
    if _state["installed"] or not rx_settings.RX_SHUTDOWN_TIMEOUT:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    _state["installed"] = True
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        try:  # Python runs signal handlers in the main thread: in its loop, if running
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if _state["draining"] or loop is None:  # a second SIGTERM, or nothing to drain
            _pass_on(previous, signum, frame)
            return
        _state["draining"] = True
        seconds = float(rx_settings.RX_SHUTDOWN_TIMEOUT or 0)
        loop.call_soon_threadsafe(lambda: loop.create_task(_drain_then(seconds, previous, signum)))

    signal.signal(signal.SIGTERM, on_sigterm)


async def _drain_then(seconds: float, previous: Any, signum: int) -> None:
    connections = list(_connections)
    logger.info("rxdjango: SIGTERM, draining %d connection(s)", len(connections))
    deadline = time.monotonic() + seconds
    try:
        drains = [asyncio.ensure_future(connection.drain(deadline)) for connection in connections]
        if drains:
            _done, late = await asyncio.wait(drains, timeout=max(0.0, deadline - time.monotonic()))
            if late:
                logger.warning("rxdjango: %d connection(s) still busy at shutdown", len(late))
    except Exception:
        logger.exception("rxdjango: draining failed; stopping anyway")
    _pass_on(previous, signum, None)


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    """Hand the signal to the handler that was there before ours."""
    signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    if callable(previous):
        handler: Callable[[int, FrameType | None], Any] = previous
        handler(signum, frame)
    elif previous != signal.SIG_IGN:
        os.kill(os.getpid(), signum)
