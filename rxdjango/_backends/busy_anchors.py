"""Changes to anchors another propagation holds: the free ones first, one wait per
anchor.

A batch of changes is split into groups reaching disjoint anchors, each applied
under its anchors' locks. Groups whose anchors are free are applied at once; the
others wait for their locks, so a change to an anchor that is being changed slowly
(thousands of rows re-read) does not hold up the batch's changes to other anchors.

While an anchor stays busy, changes to it keep coming, and each batch's group for it
would wait in turn, holding a thread to re-read the same rows once more. Instead, the
first group to wait for some anchors is joined by the groups arriving for those
anchors before it got their locks: one propagation applies them together, reading
each row once at its latest value, and every caller returns when it is done (a
propagation sends the rows as they are when it reads them, so a change applied
later, together with newer ones, reaches clients as the same final state). While
waiting, a caller gives up its place among the process's propagations
(:mod:`rxdjango._slots`): a slow anchor cannot take all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from .. import _priority
from .._change import AnchorRef
from .._slots import let_go_while_waiting

__all__ = ["Apply", "BusyAnchors", "Group", "Touched"]

Touched = dict[str, set[Any]]

Group = tuple[Touched, set[AnchorRef]]
"""Changes reaching some anchors, and those anchors (locked together)."""

Apply = Callable[[Callable[[], Touched], set[AnchorRef], bool], bool]
"""``apply(changes, scope, wait)``: lock ``scope`` (without ``wait``, give up and return
False if one is held), call ``changes()`` once the locks are held and apply what it
returns; may widen ``scope`` in place."""


class _Wait:
    """Changes waiting for the locks of ``refs``; joinable until their locks are held."""

    def __init__(self, touched: Touched, refs: set[AnchorRef], only: AnchorRef | None) -> None:
        self.touched = {kind: set(pks) for kind, pks in touched.items()}
        self.refs = frozenset(refs)
        self.only = only
        self.started = False
        self.done = threading.Event()
        self.failure: BaseException | None = None


class BusyAnchors:
    """The groups of one process waiting for anchors, by anchor."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: dict[AnchorRef, _Wait] = {}

    def apply(self, groups: Iterable[Group], apply: Apply, only: AnchorRef | None) -> None:
        """Apply each group whose anchors are free now, then the others (see the module).
        Groups reach disjoint anchors, so their order does not matter."""
        waiting = [group for group in groups if not apply(_fixed(group[0]), group[1], False)]
        if not waiting:
            return
        let_go_while_waiting()
        _priority.waiting()
        for touched, scope in waiting:
            self._after_holders(touched, scope, only, apply)

    def _after_holders(
        self, touched: Touched, scope: set[AnchorRef], only: AnchorRef | None, apply: Apply
    ) -> None:
        with self._guard:
            joined = self._joinable(scope, only)
            if joined is not None:
                for kind, pks in touched.items():
                    joined.touched.setdefault(kind, set()).update(pks)
            else:
                mine = _Wait(touched, scope, only)
                for ref in mine.refs:
                    self._waiting[ref] = mine
        if joined is not None:
            joined.done.wait()
            if joined.failure is not None:
                raise joined.failure
            return
        try:
            apply(lambda: self._start(mine), scope, True)
        except BaseException as failure:
            mine.failure = failure
            raise
        finally:
            self._start(mine)  # no longer joinable, even if it failed before its locks
            mine.done.set()

    def _joinable(self, scope: set[AnchorRef], only: AnchorRef | None) -> _Wait | None:
        """The wait covering every anchor of ``scope``, if one does and has not begun."""
        waits = {self._waiting.get(ref) for ref in scope}
        if len(waits) != 1:
            return None
        wait = waits.pop()
        if wait is None or wait.started or wait.only != only:
            return None
        return wait

    def _start(self, wait: _Wait) -> Touched:
        """Its locks are held: what joined it is what it applies; nothing joins now."""
        with self._guard:
            wait.started = True
            for ref in wait.refs:
                if self._waiting.get(ref) is wait:
                    del self._waiting[ref]
            return wait.touched


def _fixed(touched: Touched) -> Callable[[], Touched]:
    return lambda: touched
