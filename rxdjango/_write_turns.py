"""Turns of the library's writes to one SQLite file, taken inside the process.

SQLite lets one connection write at a time. A connection that finds the file locked
waits in SQLite's busy handler, which sleeps between tries (1, 2, 5, ... up to
100 ms), so the database threads of one process writing at once spend their time
asleep while the file is free. Writers of this process take turns on a lock of their
own instead and are woken the moment it is released; SQLite's handler is left for
writers in other processes. Other databases lock rows, not the whole database:
there, a turn is taken at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.db import OperationalError, connections, transaction

__all__ = ["write_turn", "writing_transaction"]

_turns: dict[str, threading.Lock] = {}
_guard = threading.Lock()

#: Seconds Python's sqlite3 module waits for a locked file unless ``OPTIONS`` say.
SQLITE_TIMEOUT = 5.0


def _turn(using: str) -> threading.Lock | None:
    """The lock of ``using``'s writers, or None if its database needs no turns."""
    if connections[using].vendor != "sqlite":
        return None
    with _guard:
        return _turns.setdefault(using, threading.Lock())


def _take(turn: threading.Lock, using: str) -> None:
    """Wait for the turn as long as SQLite would wait for the file, then fail as it would."""
    options = connections[using].settings_dict.get("OPTIONS") or {}
    if not turn.acquire(timeout=float(options.get("timeout", SQLITE_TIMEOUT))):
        raise OperationalError("database is locked")


@contextlib.contextmanager
def write_turn(using: str) -> Iterator[None]:
    """Hold this process's write turn on ``using`` (a statement outside a transaction)."""
    turn = _turn(using)
    if turn is None:
        yield
        return
    _take(turn, using)
    try:
        yield
    finally:
        turn.release()


@contextlib.contextmanager
def writing_transaction(using: str) -> Iterator[None]:
    """``transaction.atomic(using)`` holding the write turn until it commits or rolls
    back, not while the callbacks run that ``on_commit`` registered (they propagate the
    change, and may write themselves)."""
    turn = _turn(using)
    if turn is None:
        with transaction.atomic(using=using):
            yield
        return
    _take(turn, using)
    held = [True]

    def release() -> None:
        if held[0]:
            held[0] = False
            turn.release()

    try:
        with transaction.atomic(using=using):
            # Registered first, so it runs first: right after the commit.
            transaction.on_commit(release, using=using)
            yield
    finally:
        release()
