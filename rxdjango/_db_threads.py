"""Database work off the event loop, on a bounded pool of threads with their own connections.

Channels' ``database_sync_to_async`` runs every call of a process on one thread, so
the writes, snapshots and logins of all connections queue behind each other, and with
Django's default ``CONN_MAX_AGE = 0`` each call opens a new database connection. The
library's own database work runs here instead: on one of ``RX_DB_THREADS`` threads,
each keeping its connections open between calls (persistent whatever ``CONN_MAX_AGE``
says when that is 0, closed once broken or older than ``RX_DB_CONNECTION_AGE``).
Calls of different sockets run concurrently; the calls of one socket stay in order
because its consumer awaits each before it sends the next.

Backpressure: while the oldest call waiting for a thread has waited
``RX_DB_QUEUE_WAIT`` seconds or more, :func:`overloaded` is true and a client's write
or action is refused at once with a 503 instead of taking a place in a queue that
grows faster than it drains. Measuring the wait, not the length, adapts to what the
database can do: the queue stays about that long, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import connections

from .conf import rx_settings

__all__ = [
    "KeptConnections",
    "in_db_thread",
    "overloaded",
    "saturated",
    "stop_db_threads",
    "waiting_calls",
]

logger = logging.getLogger("rxdjango")

T = TypeVar("T")


@dataclass
class _Call:
    func: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    queued_at: float = field(default_factory=time.monotonic)


_STOP = object()


class _Pool:
    """Worker threads reading one queue; each closes its connections when it stops."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: queue.SimpleQueue[_Call | object] = queue.SimpleQueue()
        self.threads = [
            threading.Thread(target=self._work, name=f"rxdjango-db-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for _ in self.threads:
            self.calls.put(_STOP)
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)

    def _work(self) -> None:
        kept = KeptConnections()
        try:
            while (call := self.calls.get()) is not _STOP:
                assert isinstance(call, _Call)
                global _running
                with _lock:
                    _queued.pop(id(call), None)
                    _running += 1
                try:
                    kept.before_call()
                    self._run(call)
                    kept.after_call()
                finally:
                    with _lock:
                        _running -= 1
        finally:
            connections.close_all()

    @staticmethod
    def _run(call: _Call) -> None:
        if call.future.cancelled():  # the caller went away before its turn
            return
        try:
            result = call.context.run(call.func)
        except BaseException as error:  # handed to the awaiting task, raised there
            call.loop.call_soon_threadsafe(_settle, call.future, None, error)
        else:
            call.loop.call_soon_threadsafe(_settle, call.future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


#: Seconds after which a thread checks an idle connection before using it again (the
#: server or a proxy may have closed it meanwhile: a restart, an idle timeout).
IDLE_CHECK = 30.0


class KeptConnections:
    """One thread's database connections, kept open between calls, unless broken or old.

    What Django does around a request (``close_old_connections``, ``CONN_HEALTH_CHECKS``),
    except that ``CONN_MAX_AGE = 0`` (Django's default, made for one connection per
    request) means ``RX_DB_CONNECTION_AGE`` here: a pool thread is not a request.
    """

    def __init__(self) -> None:
        #: alias -> (id of the DB-API connection, when it was first seen, when last used)
        self.seen: dict[str, tuple[int, float, float]] = {}

    def before_call(self) -> None:
        """Close a connection that no longer answers (Django then reconnects): checked
        before every call with ``CONN_HEALTH_CHECKS``, else after it sat idle a while."""
        now = time.monotonic()
        for conn in connections.all(initialized_only=True):
            seen = self.seen.get(conn.alias)
            if conn.connection is None or seen is None or seen[0] != id(conn.connection):
                continue
            due = conn.settings_dict.get("CONN_HEALTH_CHECKS") or now - seen[2] >= IDLE_CHECK
            if due and not conn.is_usable():
                conn.close()
                del self.seen[conn.alias]

    def after_call(self) -> None:
        now = time.monotonic()
        for conn in connections.all(initialized_only=True):
            if conn.connection is None:
                self.seen.pop(conn.alias, None)
                continue
            if conn.errors_occurred:
                if conn.is_usable():
                    conn.errors_occurred = False
                else:
                    conn.close()
                    self.seen.pop(conn.alias, None)
                    continue
            ident = id(conn.connection)
            seen = self.seen.get(conn.alias)
            opened = seen[1] if seen is not None and seen[0] == ident else now
            self.seen[conn.alias] = (ident, opened, now)
            configured = conn.settings_dict.get("CONN_MAX_AGE", 0)
            max_age = rx_settings.RX_DB_CONNECTION_AGE if configured == 0 else configured
            if max_age is not None and now - opened >= float(max_age):
                conn.close()
                del self.seen[conn.alias]


_pool: _Pool | None = None
#: calls not picked up by a thread yet, oldest first: id -> when queued
_queued: OrderedDict[int, float] = OrderedDict()
#: calls a thread is running
_running = 0
_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _lock:
        if _pool is None:
            _pool = _Pool(max(1, int(rx_settings.RX_DB_THREADS)))
        return _pool


def waiting_calls() -> int:
    """Calls waiting for a database thread (not the ones running)."""
    with _lock:
        return len(_queued)


def saturated() -> bool:
    """Every thread runs a call, or calls wait for one: new work waits its turn."""
    with _lock:
        return bool(_queued) or (_pool is not None and _running >= _pool.size)


def overloaded() -> bool:
    """A call has waited ``RX_DB_QUEUE_WAIT`` seconds for a database thread: the
    database work of this process is behind, and clients' new requests are refused."""
    limit = rx_settings.RX_DB_QUEUE_WAIT
    if limit is None:
        return False
    with _lock:
        oldest = next(iter(_queued.values()), None)
    return oldest is not None and time.monotonic() - oldest >= float(limit)


async def in_db_thread(func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` on a database thread and return its result."""
    pool = _get_pool()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    call = _Call(lambda: func(*args), loop, future)
    with _lock:
        _queued[id(call)] = call.queued_at
    try:
        pool.calls.put(call)
        return await future
    finally:
        with _lock:
            _queued.pop(id(call), None)  # cancelled before a thread took it


def stop_db_threads() -> None:
    """Stop the threads (each closes its connections); the next call starts new ones.

    For tests, before their database is flushed or dropped, and for settings that
    change the pool's size.
    """
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.stop()
