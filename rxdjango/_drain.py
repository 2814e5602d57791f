"""Draining the change log: its rows become propagations, batched, several at once.

The committing thread of a change (right after its commit) and the relay's workers
(:mod:`rxdjango._relay`) drain the log the same way: read rows no other drain of
this process holds, propagate them (with what the model signals noted), then
delete them. Reading is one at a time per database; propagating is up to
:data:`CONCURRENT_DRAINS` at once, the backend ordering changes per anchor (a drain
waiting for an anchor another propagation holds gives its place up meanwhile).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.db import connections, models

from . import _metrics, _registry
from ._capture import LOG_TABLE
from ._committed import propagate_committed
from ._slots import Place, working_in
from ._write_turns import write_turn

__all__ = [
    "BATCH",
    "CONCURRENT_DRAINS",
    "Batch",
    "after_committers",
    "claim",
    "drain",
    "drain_slots",
    "finish",
]

logger = logging.getLogger("rxdjango")

#: Log rows handled per propagation.
BATCH = 5000

Touched = dict[type[models.Model], set[Any]]


#: Drains of one database that propagate at once in a process: each changes the
#: anchors its rows reach (the backend orders changes per anchor), so a slow
#: propagation of one anchor does not hold up the others. A drain waiting for an
#: anchor's lock lets its place go (:mod:`._slots`).
CONCURRENT_DRAINS = 4

#: One reader of the log at a time per database in a process; the rows it read stay
#: "in flight" (skipped by the next reader) until their propagation deleted them.
_reading: dict[str, threading.Lock] = {}
_slots: dict[str, threading.BoundedSemaphore] = {}
_in_flight: dict[str, list[_InFlight]] = {}
_draining_guard = threading.Lock()

#: Runs of at least this many consecutive ids in flight are left out as a range.
_RUN = 16


class _InFlight:
    """The log rows one drain read, until it deleted them: their ids, and how an SQLite
    query leaves them out (a large commit's rows have consecutive ids: one range)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = frozenset(ids)
        self.runs: list[tuple[int, int]] = []
        self.single: list[int] = []
        ordered = sorted(ids)
        start = 0
        while start < len(ordered):
            end = start
            while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
                end += 1
            if end - start + 1 >= _RUN:
                self.runs.append((ordered[start], ordered[end]))
            else:
                self.single += ordered[start : end + 1]
            start = end + 1


@dataclass
class Batch:
    """What the callers waiting for the next drain of a database noted, propagated
    together by whichever of them reads the log first (the others only wait for it)."""

    touched: Touched = field(default_factory=dict)
    created: Touched = field(default_factory=dict)
    claimed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    handled: int = 0
    failure: BaseException | None = None
    in_flight: _InFlight | None = None


#: The batch the next drain of each database takes.
_batches: dict[str, Batch] = {}

#: Committing threads of this process inside :func:`drain`, per database.
_committing: dict[str, int] = {}
_committers_done = threading.Condition(_draining_guard)


def _drain_lock(using: str) -> threading.Lock:
    """Held while one drain reads the log of ``using``."""
    with _draining_guard:
        return _reading.setdefault(using, threading.Lock())


def drain_slots(using: str) -> threading.BoundedSemaphore:
    with _draining_guard:
        return _slots.setdefault(using, threading.BoundedSemaphore(CONCURRENT_DRAINS))


def _join_batch(using: str, touched: Touched | None, created: Touched | None) -> Batch:
    with _draining_guard:
        batch = _batches.setdefault(using, Batch())
        for model, pks in (touched or {}).items():
            batch.touched.setdefault(model, set()).update(pks)
        for model, pks in (created or {}).items():
            batch.created.setdefault(model, set()).update(pks)
        return batch


def drain(
    using: str,
    touched: Touched | None = None,
    created: Touched | None = None,
    limit: int = BATCH,
) -> int:
    """Propagate one batch of the log (with ``touched`` / ``created`` noted by the
    signals), then delete the rows read; the number of log rows handled.

    Callers that arrive while the log is being read, or while every drain slot is
    busy, join one batch, which the first of them to read the log propagates for all
    (one read of the log, one propagation); the others return when it is done, so
    each caller's changes are published when it returns, and many commits at once
    cost one propagation, not one each in turn.

    The log's own reads and deletes are not counted as propagation work
    (``_metrics``): ``make bench`` reports them as the cost of capture.
    """
    with _draining_guard:
        _committing[using] = _committing.get(using, 0) + 1
    try:
        batch = _join_batch(using, touched, created)
        place = Place(drain_slots(using))
        place.take()
        with working_in(place):
            ids = claim(using, batch, limit)
            if ids is not None:
                finish(using, batch, ids)
                return batch.handled
        batch.done.wait()
        if batch.failure is not None:
            raise batch.failure  # the propagation that carried this caller's changes failed
        return batch.handled
    finally:
        with _draining_guard:
            _committing[using] -= 1
            if not _committing[using]:
                _committers_done.notify_all()


def after_committers(using: str, timeout: float) -> None:
    """Return once no committing thread of this process is in a drain of ``using`` (or
    after ``timeout`` seconds). Each of them reads every log row no drain holds, other
    processes' rows too; a relay reading meanwhile takes rows that a committer has
    just committed and is about to propagate with what its signals noted: the same
    rows propagated twice."""
    with _committers_done:
        _committers_done.wait_for(lambda: not _committing.get(using), timeout)


def claim(using: str, batch: Batch, limit: int) -> list[int] | None:
    """Take ``batch`` (None if another drain took it) and read the log rows no other
    drain of this process holds into it; they are in flight until :func:`finish`."""
    with _drain_lock(using):
        with _draining_guard:
            if batch.claimed:
                return None
            batch.claimed = True
            if _batches.get(using) is batch:
                del _batches[using]  # who arrives from now on joins the next one
            skip = list(_in_flight.setdefault(using, []))
        try:
            ids = _read_log(using, limit, batch.touched, batch.created, skip)
        except BaseException as failure:
            batch.failure = failure
            batch.done.set()
            raise
        batch.in_flight = _InFlight(ids)
        with _draining_guard:
            _in_flight[using].append(batch.in_flight)
        return ids


def finish(using: str, batch: Batch, ids: list[int]) -> None:
    """Propagate a claimed batch, then delete its log rows (kept if it failed: a
    crash or a later drain handles them again)."""
    try:
        if batch.touched:
            propagate_committed(batch.touched, batch.created)
        if ids:
            with write_turn(using), connections[using].cursor() as cursor:
                placeholders = ", ".join(["%s"] * len(ids))
                cursor.execute(f"DELETE FROM {LOG_TABLE} WHERE id IN ({placeholders})", ids)
            _metrics.count(captured=len(ids))
        batch.handled = len(ids)
    except BaseException as failure:
        batch.failure = failure
        raise
    finally:
        with _draining_guard:
            if batch.in_flight in _in_flight[using]:
                _in_flight[using].remove(batch.in_flight)
        batch.done.set()


def _read_log(
    using: str, limit: int, touched: Touched, created: Touched, skip: list[_InFlight]
) -> list[int]:
    by_table = {model._meta.db_table: model for model in _registry.tracked_models()}
    ids: list[int] = []
    for row_id, table, text_pk, operation in _log_rows(using, limit, skip):
        ids.append(row_id)
        model = by_table.get(table)
        if model is None:
            continue  # a table no channel reads any more
        try:
            pk = model._meta.pk.to_python(text_pk)
        except Exception:  # a value its field cannot read back: nothing to re-read
            logger.warning("rxdjango: ignored captured change %s %r", table, text_pk)
            continue
        touched.setdefault(model, set()).add(pk)
        if operation == "I":
            created.setdefault(model, set()).add(pk)
    return ids


#: The oldest log rows but those in flight, in id order.
_ROWS = (
    "SELECT id, table_name, row_pk, operation FROM {log} WHERE {not_in_flight} ORDER BY id LIMIT %s"
)
#: The same as one value (a JSON array of arrays), on SQLite.
_SQLITE_ROWS = (
    "SELECT json_group_array(json_array(id, table_name, row_pk, operation)) FROM ({rows})"
)


def _log_rows(using: str, limit: int, skip: list[_InFlight]) -> list[tuple[int, str, str, str]]:
    """The oldest ``limit`` log rows not in flight, in id order.

    The query leaves out the long runs of consecutive ids in flight (a large commit's
    rows), as ranges; the other ids in flight are left out by SQLite's query, and by
    Python on PostgreSQL (where an ``id <> ALL(...)`` filter would compare each row
    with every such id). On SQLite the rows are read as one value: its Python module
    lets the interpreter go at every row it steps through and takes it back after, so
    reading thousands of rows one by one while another thread computes (a slow
    anchor's propagation) waits for the interpreter thousands of times. PostgreSQL's
    driver reads rows without letting it go.
    """
    connection = connections[using]
    conditions = ["1 = 1"]
    params: list[Any] = []
    for held in skip:
        for first, last in held.runs:
            conditions.append("id NOT BETWEEN %s AND %s")
            params += [first, last]
    single = {row_id for held in skip for row_id in held.single}
    sqlite = connection.vendor == "sqlite"
    if sqlite and single:
        conditions.append("id NOT IN (SELECT value FROM json_each(%s))")
        params.append(orjson.dumps(sorted(single)).decode())
    rows = _ROWS.format(log=LOG_TABLE, not_in_flight=" AND ".join(conditions))
    with connection.cursor() as cursor:
        if sqlite:
            cursor.execute(_SQLITE_ROWS.format(rows=rows), [*params, limit])
            found = orjson.loads(cursor.fetchone()[0])
        else:
            cursor.execute(rows, [*params, limit + len(single)])
            found = [row for row in cursor.fetchall() if row[0] not in single][:limit]
    return [(int(row_id), table, str(pk), operation) for row_id, table, pk, operation in found]
