"""Process-wide counters of the work that propagating committed changes costs.

A few integer increments per change: cheap enough to stay on in production, and
what the benchmark (``make bench``) and the tests read to show that the cost of
one change does not grow with the number of clients watching it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connections

from . import _telemetry

__all__ = ["Work", "count", "counting_queries", "snapshot"]


@dataclass
class Work:
    #: committed transactions whose changes were propagated
    flushes: int = 0
    #: SQL statements run while propagating (re-reading rows, finding parents);
    #: transaction control (BEGIN, COMMIT) is not counted: psycopg sends it without a
    #: statement of Django's, SQLite's backend with one, and it reads no rows either way
    queries: int = 0
    #: records serialized while propagating
    serialized: int = 0
    #: delta frames encoded (once per anchor and owner, never per client)
    frames: int = 0
    #: change-log rows relayed (each read once and deleted in one statement per batch)
    captured: int = 0


_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK"})
_work = Work()
_lock = threading.Lock()


def count(**amounts: int) -> None:
    """Add ``amounts`` to the named counters."""
    with _lock:
        for name, amount in amounts.items():
            setattr(_work, name, getattr(_work, name) + amount)
    for name, amount in amounts.items():
        _telemetry.work.labels(kind=name).inc(amount)


def snapshot() -> dict[str, int]:
    """The counters since the process started."""
    with _lock:
        return asdict(_work)


@contextlib.contextmanager
def counting_queries() -> Iterator[None]:
    """Count the SQL statements run by this thread inside the block, on every database."""

    def counter(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if sql.split(" ", 1)[0] not in _TRANSACTION_CONTROL:  # "BEGIN DEFERRED" too
            count(queries=1)
        return execute(sql, params, many, context)

    # Not Django's ``execute_wrapper()``: it removes the last wrapper on exit, and a block
    # that opens the connection lets ``connection_created`` receivers (a project's query
    # logging or tracing) add theirs after this one: theirs would go, this one stay.
    wrapped = [connections[alias] for alias in connections]
    for connection in wrapped:
        connection.execute_wrappers.append(counter)
    try:
        yield
    finally:
        for connection in wrapped:
            with contextlib.suppress(ValueError):
                connection.execute_wrappers.remove(counter)
