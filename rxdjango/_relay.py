"""The relay: the database's change log becomes propagations (a change source).

Changes reach :func:`~rxdjango._committed.propagate_committed` from the log the
triggers write (:mod:`rxdjango._capture`), drained (:mod:`rxdjango._drain`) in two
ways:

* **in the committing thread**, right after a commit the model signals saw: the log
  rows then visible (this transaction's, and any other's not handled yet) are
  propagated together with what the signals noted, as the signal path always did,
  so a change made in the serving process is sent without waiting for anyone;
* **by a relay thread** of the serving process, for everything else: other
  processes, ``QuerySet.update()``, raw SQL, other services. It reads the log in
  order and hands each batch to one of its workers, which propagate side by side.
  It waits without query work: ``LISTEN`` on PostgreSQL (the triggers ``NOTIFY``),
  ``PRAGMA data_version`` every ``RX_CAPTURE_POLL`` seconds on SQLite (a read of the
  file header).

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
from datetime import timedelta
from queue import SimpleQueue

from django.apps import apps
from django.db import OperationalError, connections
from django.db.models.functions import Now

from . import _events
from ._backends import get_backend
from ._capture import LOG_TABLE, NOTIFY_CHANNEL, capturing, missing_triggers, watched_tables
from ._db_threads import KeptConnections
from ._drain import BATCH, CONCURRENT_DRAINS, Batch, after_committers, claim, drain_slots, finish
from ._slots import Place, working_in
from .conf import rx_settings

__all__ = [
    "Relay",
    "enforce_retention",
    "ensure_relay",
    "relay_known",
    "relay_running",
    "relaying",
    "stop_relays",
]

logger = logging.getLogger("rxdjango")


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
#: Seconds at most the relay then waits for this process's committing threads to be
#: out of their drains (they read other processes' rows too, while they keep coming).
COMMITTERS_WAIT = 1.0
#: Threads at most propagating the relay's batches: as many as the drains running at
#: once, plus those waiting for anchors other propagations hold (see ``_slots``).
MAX_RELAY_WORKERS = 8 * CONCURRENT_DRAINS
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
        self._handed: SimpleQueue[tuple[Batch, list[int], Place] | None] = SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._idle_workers = 0
        self._queued = 0
        self._workers_guard = threading.Lock()
        #: a worker's failure, raised by the relay thread (which then starts over)
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        with self._workers_guard:
            workers = list(self._workers)
        for _ in workers:
            self._handed.put(None)
        for worker in workers:
            worker.join(timeout=5)

    def _hand(self, batch: Batch, ids: list[int], place: Place) -> None:
        """Give a batch to an idle worker, or to a new one if every worker is busy or
        waiting for an anchor (a waiting worker gave its place up: the batch does not
        wait for it)."""
        with self._workers_guard:
            self._queued += 1
            if self._queued > self._idle_workers and len(self._workers) < MAX_RELAY_WORKERS:
                worker = threading.Thread(
                    target=self._propagate_handed,
                    name=f"rxdjango-relay-{len(self._workers)}",
                    daemon=True,
                )
                self._workers.append(worker)
                self._idle_workers += 1
                worker.start()
        self._handed.put((batch, ids, place))

    def _drain_all(self) -> None:
        """Read the log until a read finds nothing new, handing each batch read to a
        worker: the log is read in order, its propagations run side by side (as many
        as :data:`CONCURRENT_DRAINS`, the slots this process's committing threads use
        too)."""
        slots = drain_slots(self.using)
        while not self._stopped.is_set():
            self._raise_failure()
            place = Place(slots)
            if not place.take(timeout=0.5):
                continue
            batch = Batch()
            try:
                ids = claim(self.using, batch, BATCH)
            except BaseException:
                place.release()
                raise
            if not ids:
                place.release()
                return
            self._hand(batch, ids, place)

    def _propagate_handed(self) -> None:
        kept = KeptConnections()
        try:
            while True:
                handed = self._handed.get()
                with self._workers_guard:
                    self._idle_workers -= 1
                    if handed is None:
                        return
                    self._queued -= 1
                batch, ids, place = handed
                kept.before_call()
                try:
                    with working_in(place):
                        finish(self.using, batch, ids)
                except BaseException as failure:
                    self._failure = failure
                finally:
                    kept.after_call()
                    with self._workers_guard:
                        self._idle_workers += 1
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
                # it: let that thread go first rather than both reading the same rows,
                # and the threads committing after it (each reads every row not held).
                self._stopped.wait(COMMITTER_FIRST)
                after_committers(self.using, COMMITTERS_WAIT)
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
