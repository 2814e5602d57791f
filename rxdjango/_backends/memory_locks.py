"""Anchor locks of the embedded backend: one per anchor in use, none kept after.

They order the propagations, loads and reloads of one anchor, so those of other
anchors run meanwhile; the cache's own lock is only held for short steps on its
dictionaries. Locks of several anchors are taken in one order, so two holders never
wait on each other.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .._change import AnchorRef

__all__ = ["LocalAnchorLocks"]


class LocalAnchorLocks:
    """A lock per anchor, created when first wanted and forgotten when nobody wants it."""

    def __init__(self) -> None:
        #: anchor -> (its lock, how many threads hold or wait for it)
        self._locks: dict[AnchorRef, tuple[threading.Lock, int]] = {}
        self._guard = threading.Lock()

    @contextmanager
    def held(self, refs: Iterable[AnchorRef], wait: bool = True) -> Iterator[bool]:
        """Hold the lock of every anchor of ``refs`` for the block (True). Without
        ``wait``, if one of them is held, none is taken and the block gets False."""
        taken: list[tuple[AnchorRef, threading.Lock]] = []
        try:
            for ref in sorted(set(refs), key=repr):
                lock = self._want(ref)
                try:
                    got = lock.acquire(blocking=wait)
                except BaseException:
                    self._unwant(ref)
                    raise
                if not got:
                    self._unwant(ref)
                    yield False
                    return
                taken.append((ref, lock))
            yield True
        finally:
            for ref, lock in reversed(taken):
                lock.release()
                self._unwant(ref)

    def _want(self, ref: AnchorRef) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(ref) or (threading.Lock(), 0)
            self._locks[ref] = (lock, users + 1)
            return lock

    def _unwant(self, ref: AnchorRef) -> None:
        with self._guard:
            lock, users = self._locks[ref]
            if users == 1:
                del self._locks[ref]
            else:
                self._locks[ref] = (lock, users - 1)
