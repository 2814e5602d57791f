"""Small propagations before large ones, inside a process.

Python runs one thread at a time. A thread coming back from a query waits for the
interpreter until the thread running lets it go, which a computing thread does every
``sys.getswitchinterval()`` (5 ms by default). Propagating one change makes about a
dozen queries; beside a propagation computing for a second (thousands of rows of a
slow anchor re-read and serialized), it would wait at each of them, and a change to
an unrelated anchor would reach its clients tens of milliseconds late.

So a large propagation steps aside at its checkpoints (:func:`step_aside`, once per
record it reads or compares) while a small one runs, until that one is done. It never
waits longer than it has just computed (and at most :data:`LONGEST_STEP_ASIDE`): a
steady stream of small changes slows a large one to half its pace, no more. A small
propagation that waits for an anchor's lock does not count as running meanwhile
(:func:`waiting`): the large one may be what it waits for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

__all__ = ["LONGEST_STEP_ASIDE", "SMALL_ROWS", "propagating", "step_aside", "waiting"]

#: A propagation of at most this many changed rows goes first.
SMALL_ROWS = 100
#: Seconds at most a large propagation waits at one checkpoint.
LONGEST_STEP_ASIDE = 0.05

_small_running = 0
_changed = threading.Condition()
_current = threading.local()


class _Large:
    def __init__(self) -> None:
        self.computing_since = time.monotonic()


class _Small:
    def __init__(self) -> None:
        self.counted = False


def _count(small: _Small, counted: bool) -> None:
    global _small_running
    with _changed:
        if small.counted == counted:
            return
        small.counted = counted
        _small_running += 1 if counted else -1
        if not _small_running:
            _changed.notify_all()


@contextlib.contextmanager
def propagating(rows: int) -> Iterator[None]:
    """This thread propagates a batch of ``rows`` changed rows for the block."""
    before = getattr(_current, "run", None)
    run: _Large | _Small = _Small() if rows <= SMALL_ROWS else _Large()
    _current.run = run
    if isinstance(run, _Small):
        _count(run, True)
    try:
        yield
    finally:
        if isinstance(run, _Small):
            _count(run, False)
        _current.run = before


def waiting() -> None:
    """This thread is about to wait for another propagation: it no longer counts as a
    small one running (the one it waits for may be a large one stepping aside)."""
    run = getattr(_current, "run", None)
    if isinstance(run, _Small):
        _count(run, False)


def step_aside() -> None:
    """A checkpoint of large work: let the small propagations running finish first."""
    run = getattr(_current, "run", None)
    if not isinstance(run, _Large) or not _small_running:
        return
    now = time.monotonic()
    longest = min(now - run.computing_since, LONGEST_STEP_ASIDE)
    if longest <= 0.001:
        return
    with _changed:
        _changed.wait_for(lambda: not _small_running, timeout=longest)
    run.computing_since = time.monotonic()
