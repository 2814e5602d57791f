"""A thread's place among a bounded number of workers, let go while it waits.

A process bounds how many propagations of one database run at once (their work is
CPU and queries). A propagation that then waits for an anchor another one holds does
no work: holding its place meanwhile would let a slow anchor take every place and
hold up changes to all the others. The worker gives its place up when it begins to
wait (:func:`let_go_while_waiting`, called where it would block) and does not take
it back: what is left after the wait is bounded by the anchors waited for.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["Place", "let_go_while_waiting", "working_in"]


class Place:
    """One acquisition of a bounded semaphore, released exactly once."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self._held = False
        self._guard = threading.Lock()

    def take(self, timeout: float | None = None) -> bool:
        if not self._slots.acquire(timeout=timeout):
            return False
        self._held = True
        return True

    def release(self) -> None:
        """Give the place back (again: nothing)."""
        with self._guard:
            if not self._held:
                return
            self._held = False
        self._slots.release()


_current = threading.local()


@contextlib.contextmanager
def working_in(place: Place) -> Iterator[Place]:
    """Within the block, this thread's waits let ``place`` go; it is released after."""
    before = getattr(_current, "place", None)
    _current.place = place
    try:
        yield place
    finally:
        _current.place = before
        place.release()


def let_go_while_waiting() -> None:
    """This thread is about to wait for others' work: give up its place, if it has one."""
    place: Place | None = getattr(_current, "place", None)
    if place is not None:
        place.release()
