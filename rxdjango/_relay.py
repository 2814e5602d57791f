"""The relay: the database's change log becomes propagations (a change source).

Changes reach :func:`~rxdjango._committed.propagate_committed` from the log the
triggers write (:mod:`rxdjango._capture`), in two ways:

* **in the committing thread**, right after a commit the model signals saw: the log
  rows then visible (this transaction's, and any other's not handled yet) are
  propagated together with what the signals noted, as the signal path always did,
  so a change made in the serving process is sent without waiting for anyone;
* **by a relay thread** of the serving process, for everything else: other
  processes, ``QuerySet.update()``, raw SQL, other services. It waits without query
  work: ``LISTEN`` on PostgreSQL (the triggers ``NOTIFY``), ``PRAGMA data_version``
  every ``RX_CAPTURE_POLL`` seconds on SQLite (a read of the file header).

Log rows are deleted only after their propagation was published, and only those
that were read (never "up to an id": ids are not committed in order), so a crash
handles them again; propagation is idempotent, so a row handled twice sends nothing
twice.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from queue import SimpleQueue
from typing import Any

from django.apps import apps
from django.db import OperationalError, connections, models
from django.db.models.functions import Now

from . import _events, _metrics, _registry
from ._backends import get_backend
from ._capture import LOG_TABLE, NOTIFY_CHANNEL, capturing, missing_triggers, watched_tables
from ._committed import propagate_committed
from ._db_threads import KeptConnections
from .conf import rx_settings

__all__ = [
    "Relay",
    "drain",
    "enforce_retention",
    "ensure_relay",
    "relay_known",
    "relay_running",
    "relaying",
    "stop_relays",
]

logger = logging.getLogger("rxdjango")

#: Log rows handled per propagation.
BATCH = 5000

Touched = dict[type[models.Model], set[Any]]


#: Drains of one database that propagate at once in a process: each changes the
#: anchors its rows reach (the backend orders changes per anchor), so a slow
#: propagation of one anchor does not hold up the others.
CONCURRENT_DRAINS = 4

#: One reader of the log at a time per database in a process; the rows it read stay
#: "in flight" (skipped by the next reader) until their propagation deleted them.
_reading: dict[str, threading.Lock] = {}
_slots: dict[str, threading.BoundedSemaphore] = {}
_in_flight: dict[str, set[int]] = {}
_draining_guard = threading.Lock()


@dataclass
class _Batch:
    """What the callers waiting for the next drain of a database noted, propagated
    together by whichever of them reads the log first (the others only wait for it)."""

    touched: Touched = field(default_factory=dict)
    created: Touched = field(default_factory=dict)
    claimed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    handled: int = 0
    failure: BaseException | None = None


#: The batch the next drain of each database takes.
_batches: dict[str, _Batch] = {}


def _drain_lock(using: str) -> threading.Lock:
    """Held while one drain reads the log of ``using``."""
    with _draining_guard:
        return _reading.setdefault(using, threading.Lock())


def _drain_slots(using: str) -> threading.BoundedSemaphore:
    with _draining_guard:
        return _slots.setdefault(using, threading.BoundedSemaphore(CONCURRENT_DRAINS))


def _join_batch(using: str, touched: Touched | None, created: Touched | None) -> _Batch:
    with _draining_guard:
        batch = _batches.setdefault(using, _Batch())
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
    batch = _join_batch(using, touched, created)
    with _drain_slots(using):
        ids = _claim(using, batch, limit)
        if ids is not None:
            _finish(using, batch, ids)
            return batch.handled
    batch.done.wait()
    if batch.failure is not None:
        raise batch.failure  # the propagation that carried this caller's changes failed
    return batch.handled


def _claim(using: str, batch: _Batch, limit: int) -> list[int] | None:
    """Take ``batch`` (None if another drain took it) and read the log rows no other
    drain of this process holds into it; they are in flight until :func:`_finish`."""
    with _drain_lock(using):
        with _draining_guard:
            if batch.claimed:
                return None
            batch.claimed = True
            if _batches.get(using) is batch:
                del _batches[using]  # who arrives from now on joins the next one
            skip = set(_in_flight.setdefault(using, set()))
        try:
            ids = _read_log(using, limit, batch.touched, batch.created, skip)
        except BaseException as failure:
            batch.failure = failure
            batch.done.set()
            raise
        with _draining_guard:
            _in_flight[using].update(ids)
        return ids


def _finish(using: str, batch: _Batch, ids: list[int]) -> None:
    """Propagate a claimed batch, then delete its log rows (kept if it failed: a
    crash or a later drain handles them again)."""
    try:
        if batch.touched:
            propagate_committed(batch.touched, batch.created)
        if ids:
            with connections[using].cursor() as cursor:
                placeholders = ", ".join(["%s"] * len(ids))
                cursor.execute(f"DELETE FROM {LOG_TABLE} WHERE id IN ({placeholders})", ids)
            _metrics.count(captured=len(ids))
        batch.handled = len(ids)
    except BaseException as failure:
        batch.failure = failure
        raise
    finally:
        with _draining_guard:
            _in_flight[using].difference_update(ids)
        batch.done.set()


def _read_log(
    using: str, limit: int, touched: Touched, created: Touched, skip: set[int]
) -> list[int]:
    by_table = {model._meta.db_table: model for model in _registry.tracked_models()}
    ids: list[int] = []
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"SELECT id, table_name, row_pk, operation FROM {LOG_TABLE} ORDER BY id LIMIT %s",
            [limit + len(skip)],
        )
        for row_id, table, text_pk, operation in cursor.fetchall():
            if row_id in skip or len(ids) >= limit:
                continue
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


def enforce_retention(using: str) -> int:
    """Apply ``RX_CAPTURE_RETENTION``; the number of log rows dropped.

    A logged change older than the retention means nobody relayed the log for that
    long (every server was down, or the relay was stuck): rather than keep rows without
    bound, the cache is distrusted (every anchor reloads from the tables, which hold
    those changes) and the old rows are deleted. Dates are compared on the database's
    clock, which wrote them.
    """
    log = apps.get_model("rxdjango", "CapturedChange").objects.using(using)
    cutoff = Now() - timedelta(seconds=float(rx_settings.RX_CAPTURE_RETENTION))
    old = log.filter(captured_at__lt=cutoff)
    if not old.exists():
        return 0
    logger.warning(
        "rxdjango: changes waited unrelayed longer than RX_CAPTURE_RETENTION; "
        "cached anchors reload from the database"
    )
    get_backend().distrust_cache()
    dropped = 0
    while ids := list(old.order_by("id").values_list("id", flat=True)[:BATCH]):
        dropped += log.filter(id__in=ids).delete()[0]
    return dropped


#: Seconds the relay waits after a wake before reading the log (see ``_relay``).
COMMITTER_FIRST = 0.01
#: Seconds a relay holds the deployment's lease without renewing it: when its process
#: dies, another process's relay takes over within this time.
LEASE_SECONDS = 5.0


def _warn_missing_triggers(using: str) -> None:
    """Say loudly when a table some channel reads is not captured (like Django's
    "unapplied migrations" warning): installing triggers is ``migrate``'s job."""
    missing = missing_triggers(connections[using], watched_tables())
    if missing:
        logger.warning(
            "rxdjango: changes to %s are not captured in database %r (only save(), delete() "
            "and many-to-many changes made by a serving process reach clients); run "
            "`manage.py migrate` to install the capture triggers",
            ", ".join(missing),
            using,
        )


class Relay:
    """One thread relaying one database's change log. With a backend that spans
    processes, only the holder of the deployment's relay lease relays."""

    def __init__(self, using: str = "default") -> None:
        self.using = using
        self.holder = uuid.uuid4().hex
        self._renewed = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rxdjango-relay", daemon=True)
        #: batches read from the log, for the workers to propagate (None: stop)
        self._handed: SimpleQueue[tuple[_Batch, list[int]] | None] = SimpleQueue()
        self._workers = [
            threading.Thread(target=self._propagate_handed, name=f"rxdjango-relay-{n}", daemon=True)
            for n in range(CONCURRENT_DRAINS)
        ]
        #: a worker's failure, raised by the relay thread (which then starts over)
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        for _ in self._workers:
            self._handed.put(None)
        for worker in self._workers:
            worker.join(timeout=5)

    def _drain_all(self) -> None:
        """Read the log until a read finds nothing new, handing each batch read to a
        worker: the log is read in order, its propagations run side by side (as many
        as :data:`CONCURRENT_DRAINS`, the slots this process's committing threads use
        too)."""
        slots = _drain_slots(self.using)
        while not self._stopped.is_set():
            self._raise_failure()
            if not slots.acquire(timeout=0.5):
                continue
            batch = _Batch()
            try:
                ids = _claim(self.using, batch, BATCH)
            except BaseException:
                slots.release()
                raise
            if not ids:
                slots.release()
                return
            self._handed.put((batch, ids))

    def _propagate_handed(self) -> None:
        kept = KeptConnections()
        try:
            while (handed := self._handed.get()) is not None:
                batch, ids = handed
                kept.before_call()
                try:
                    _finish(self.using, batch, ids)
                except BaseException as failure:
                    self._failure = failure
                finally:
                    _drain_slots(self.using).release()
                    kept.after_call()
        finally:
            connections.close_all()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._relay()
            except OperationalError as error:
                if "schema has changed" not in str(error):
                    logger.exception("rxdjango: the change relay failed; restarting it")
                    self._stopped.wait(1.0)
                else:  # a migration altered a table under a statement of ours (SQLite
                    # says so once): read again on a new connection, nothing was lost
                    self._stopped.wait(0.05)
            except Exception:
                logger.exception("rxdjango: the change relay failed; restarting it")
                self._stopped.wait(1.0)
            finally:
                connections[self.using].close()

    def _leading(self) -> bool:
        """Hold the lease (renewed a few times per lease period, not per wake)."""
        now = time.monotonic()
        if now - self._renewed < LEASE_SECONDS / 3:
            return True
        if get_backend().lease(f"relay:{self.using}", self.holder, LEASE_SECONDS):
            if not self._renewed:
                _events.emit("relay_lease_taken", database=self.using)
            self._renewed = now
            return True
        if self._renewed:
            _events.emit("relay_lease_lost", database=self.using)
        self._renewed = 0.0
        return False

    def _relay(self) -> None:
        while not self._leading():
            if self._stopped.wait(LEASE_SECONDS / 5):
                return
        connection = connections[self.using]
        connection.ensure_connection()
        if connection.vendor == "postgresql":
            wait = self._postgresql_waiter()
        else:
            wait = self._sqlite_waiter()
        # Only a log nobody relayed can hold old rows: check when relaying (re)starts,
        # which includes after a failed propagation (so a row that cannot be propagated
        # does not stay for ever), not while idle.
        enforce_retention(self.using)
        _warn_missing_triggers(self.using)
        self._drain_all()  # what was committed while nobody relayed
        while not self._stopped.is_set():
            self._raise_failure()
            if not self._leading():
                return  # another process relays now; wait for the lease again
            if wait(float(rx_settings.RX_CAPTURE_POLL)):
                # A commit in this process is propagated by its own thread right after
                # it: let that thread go first rather than both reading the same rows.
                self._stopped.wait(COMMITTER_FIRST)
                self._drain_all()

    def _postgresql_waiter(self) -> Callable[[float], bool]:
        """Woken by the triggers' NOTIFY (on this thread's own connection)."""
        raw = connections[self.using].connection
        with raw.cursor() as cursor:
            cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")

        def wait(timeout: float) -> bool:
            # NOTIFY is deduplicated per transaction: one commit, one wake.
            return any(True for _ in raw.notifies(timeout=max(timeout, 0.5), stop_after=1))

        return wait

    def _sqlite_waiter(self) -> Callable[[float], bool]:
        """``PRAGMA data_version`` changes when another connection commits to the file."""
        seen = [self._data_version()]

        def wait(timeout: float) -> bool:
            self._stopped.wait(timeout)
            now = self._data_version()
            if now == seen[0]:
                return False
            seen[0] = now
            return True

        return wait

    def _data_version(self) -> int:
        with connections[self.using].cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            return int(cursor.fetchone()[0])


#: database alias -> its relay (None: that database does not capture changes)
_relays: dict[str, Relay | None] = {}
_relays_lock = threading.Lock()


def relaying(using: str) -> bool:
    """Whether this process relays ``using``'s change log (it serves clients)."""
    return _relays.get(using) is not None


def relay_known(using: str) -> bool:
    """Whether :func:`ensure_relay` already ran for ``using`` (no query: for event loops)."""
    return using in _relays


def relay_running(using: str) -> bool:
    """Whether ``using``'s relay thread is alive (False when it does not capture)."""
    relay = _relays.get(using)
    return relay is not None and relay._thread.is_alive()


def ensure_relay(using: str = "default") -> None:
    """Start this process's relay of ``using`` (a serving process calls it once a client
    is admitted); nothing if the database does not capture changes. ORM code."""
    with _relays_lock:
        if using in _relays:
            return
        relay = Relay(using) if capturing(using) else None
        if relay is not None:
            _forget_backlog_nobody_needs(using)
        _relays[using] = relay
    if relay is not None:
        relay.start()


def _forget_backlog_nobody_needs(using: str) -> None:
    """A process that caches in its own memory and holds nothing yet needs none of the
    changes logged so far: every anchor it will load reads them from the tables. (The
    Redis cache outlives processes: its backlog is relayed.)"""
    backend = get_backend()
    if backend.spans_processes or backend.anchors_cached():
        return
    with connections[using].cursor() as cursor:
        cursor.execute(f"DELETE FROM {LOG_TABLE}")


def stop_relays() -> None:
    """Stop every relay thread of this process (tests switch databases and backends)."""
    with _relays_lock:
        relays = [relay for relay in _relays.values() if relay is not None]
        _relays.clear()
    for relay in relays:
        relay.stop()
