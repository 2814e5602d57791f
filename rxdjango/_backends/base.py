"""What every backend offers, and the one way a cold anchor gets loaded.

A backend caches each anchor's records and fans its changes out to the clients
that watch it. :class:`Backend` is the contract the consumer, the change source
and the commands rely on; :func:`serve_snapshot` is the load loop both backends
share: exactly one caller loads a cold anchor under a lease, the others wait,
and a loader that fails or loses its lease leaves the load to the next caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._change import AnchorRef, Change, FlatRecord
from .._consistent_reads import consistent_reads
from .._hub import Subscriber
from .._loader import ORM_RECORDS
from .._propagation import Propagator
from .._registry import ChannelSpec
from .._state_model import Key, pk_repr
from .._subtrees import load_subtrees

__all__ = [
    "RETRY",
    "Backend",
    "HeldSnapshot",
    "Hot",
    "Load",
    "Snapshot",
    "Wait",
    "read_anchor",
    "replay",
    "serve_snapshot",
    "settle",
]


@dataclass
class Snapshot:
    """What a (re)connecting client of an anchor needs, as of ``tstamp``.

    :meth:`records` yields the anchor's whole state, rendered per user by the
    consumer; with ``resync`` the client must first drop what it held for the
    anchor. A catch-up (``partial``) sends only what ``changes`` (the history since
    the client's ``lastUpdate``) says that client received something about.
    """

    root: Key
    tstamp: float
    partial: bool = False
    resync: bool = False
    changes: list[Change] = field(default_factory=list)

    def records(self) -> Iterator[FlatRecord]:
        """Every record, the anchor's own first, each once (may read from the cache's
        store as it goes: call it off the event loop)."""
        raise NotImplementedError

    def current(self, keys: Iterable[Key]) -> dict[Key, FlatRecord]:
        """The records of ``keys`` that the anchor holds."""
        raise NotImplementedError


@dataclass
class HeldSnapshot(Snapshot):
    """A snapshot of an anchor cached in this process's memory.

    Records are shared with the cache (a change replaces a record, never mutates it),
    so a snapshot costs a reference per record, not a copy of the anchor.
    """

    #: The anchor's own record first, then every other one.
    ordered: list[FlatRecord] = field(default_factory=list)
    #: For a catch-up: the changed records that still exist.
    changed: dict[Key, FlatRecord] = field(default_factory=dict)

    @classmethod
    def of(cls, records: dict[Key, FlatRecord], root: Key, tstamp: float) -> HeldSnapshot:
        """The whole anchor (call with the cache lock held: ``records`` changes later)."""
        first = records.get(root)
        rest = [record for key, record in records.items() if key != root]
        return cls(root, tstamp, ordered=rest if first is None else [first, *rest])

    def records(self) -> Iterator[FlatRecord]:
        return iter(self.ordered)

    def current(self, keys: Iterable[Key]) -> dict[Key, FlatRecord]:
        return {key: self.changed[key] for key in keys if key in self.changed}


class Backend(Protocol):
    """What the consumer and the change buffer need from a cache-and-fan-out backend.

    Every method is synchronous ORM-safe code except where noted.
    """

    loads: int
    #: Whether frames published here reach clients of other processes.
    spans_processes: bool

    def clock(self) -> float:
        """Server time for ``_tstamp``, shared by every process of the deployment."""

    def process(
        self,
        channel: ChannelSpec,
        touched: dict[str, set[Any]],
        only: AnchorRef | None = None,
    ) -> None:
        """Propagate committed changes ({instance type: pks}) to cached anchors."""

    def snapshot(
        self, channel: ChannelSpec, anchor_pk: Any, since: float | None = None
    ) -> Snapshot | None:
        """The anchor's records (loading them once if cold); None if it does not exist.

        With ``since`` (the client's ``lastUpdate``), only what changed since when
        the history proves it complete, else a full snapshot marked ``resync``.
        """

    def subscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        """Deliver the anchor's future frames to ``subscriber`` (non-blocking)."""

    def unsubscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        """Stop delivering; the anchor's idle time starts when nobody watches it."""

    def clear(self, ref: AnchorRef) -> bool:
        """Drop a cached anchor (reloading it for clients that watch it); True if it was hot."""

    def register(self, channel_id: str, subscriber: Subscriber) -> None:
        """An authenticated connection: it receives system messages and anchor offers."""

    def unregister(self, channel_id: str, subscriber: Subscriber) -> None: ...

    def notify(self, ref: AnchorRef, frame: str, user_id: Any = None) -> None:
        """Send ``frame`` to the anchor's clients (only ``user_id``'s, if given)."""

    def broadcast_all(self, frame: str) -> None:
        """Send ``frame`` to every connected client of every channel."""

    def revoke(
        self, user_id: Any, code: int, channel_id: str | None = None, anchor: Any = None
    ) -> None:
        """Close the user's sockets (of one channel, of one anchor) in every process."""

    def lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take, or renew, the deployment-wide lease ``name`` for ``holder``; True while
        ``holder`` has it (it lapses ``seconds`` after the last renewal)."""

    def admit_connection(self, user_id: Any, connection_id: str) -> bool:
        """Count a connection of ``user_id`` in the deployment; False (not counted) when
        the user already has ``RX_MAX_CONNECTIONS_PER_USER``."""

    def release_connection(self, user_id: Any, connection_id: str) -> None:
        """The connection is gone (never blocks: may finish in the background)."""

    def offer_created(self, channel: ChannelSpec, pks: set[Any]) -> None:
        """Committed new anchor rows, for list channels with ``auto_update``."""

    # -- inspection (tests, benchmarks, the expire command) -----------------------------

    def anchors_cached(self) -> int:
        """How many anchors the cache holds (hot or loading), for every channel."""

    def is_cached(self, ref: AnchorRef) -> bool:
        """Whether the anchor is hot in the cache."""

    def holders(self, key: Key) -> set[AnchorRef]:
        """The cached anchors that hold the record ``key``."""

    def cached_record(self, ref: AnchorRef, key: Key) -> FlatRecord | None:
        """The record ``key`` as the hot anchor ``ref`` holds it (None if it does not)."""

    def is_idle(self, ref: AnchorRef) -> bool:
        """Whether the anchor is hot and no client of any process watches it."""

    def local_watchers(self, ref: AnchorRef) -> int:
        """Connections of this process subscribed to the anchor."""

    def unready(self) -> str | None:
        """Why this process cannot serve clients now (None: it can). Starts what a
        serving process runs, so a health check warms up a process no client reached."""

    def forget_everything(self) -> None:
        """Drop every cached anchor of every process (tests flush their database)."""

    def distrust_cache(self) -> None:
        """Changes were dropped before reaching the cache (the change log outlived its
        retention): every cached anchor reloads from the tables, its clients reconnect."""

    def expire(self, dry_run: bool = False) -> list[AnchorRef]:
        """Drop (or only list) the anchors idle past their channel's cache TTL."""

    def close(self) -> None:
        """Release connections and threads (tests switch backends)."""


class _Retry:
    """A load that must be done again (the anchor was cleared or taken over meanwhile)."""

    def __repr__(self) -> str:
        return "RETRY"


RETRY = _Retry()


@dataclass
class Hot:
    """The anchor is hot: here is its snapshot (None: it stopped being hot, ask again)."""

    snapshot: Snapshot | None


@dataclass
class Wait:
    """Another caller holds the load lease: wait (on ``event``, or until ``woken``
    returns, if given) at most ``seconds``, and ask again."""

    seconds: float
    event: threading.Event | None = None
    #: blocks until the load ends or the seconds it is given pass
    woken: Callable[[float], None] | None = None

    def wait(self) -> None:
        if self.event is not None:
            self.event.wait(self.seconds)
        elif self.woken is not None:
            self.woken(self.seconds)
        elif self.seconds > 0:
            time.sleep(self.seconds)


@dataclass
class Load:
    """This caller holds the lease: load the anchor (``lease`` identifies the attempt)."""

    lease: Any


def serve_snapshot(
    begin: Callable[[], Hot | Wait | Load],
    load: Callable[[Any], object],
    since: float | None,
) -> Snapshot | None:
    """Ask ``begin`` until the anchor is hot, loading it when handed the lease.

    ``load(lease)`` returns None if the anchor's row does not exist, ``RETRY`` if its
    work was discarded, anything else once the anchor is hot. A snapshot served right
    after this caller loaded proves nothing about what changed before: with ``since``
    it is marked ``resync``.
    """
    loaded = False
    while True:
        step = begin()
        if isinstance(step, Hot):
            if step.snapshot is None:
                continue
            if loaded and since is not None:
                step.snapshot.resync = True
            return step.snapshot
        if isinstance(step, Wait):
            step.wait()
            continue
        result = load(step.lease)
        if result is None:
            return None
        loaded = loaded or result is not RETRY


#: Changes noted since the last call ({instance type: pks}); None if some may be lost.
ChangesSince = Callable[[], "dict[str, set[Any]] | None"]


def settle(
    channel: ChannelSpec,
    propagator: Propagator,
    touched: dict[str, set[Any]],
    clock: Callable[[], float],
    changes_since: ChangesSince,
    only: AnchorRef | None = None,
    scope: Collection[AnchorRef] | None = None,
) -> None:
    """Apply ``touched`` to the locked anchors, then again the records that entered an
    anchor if their rows changed meanwhile, until none did.

    Ordering per anchor does not cover a row *entering* an anchor: a propagation reads
    the row, the row changes (it moves away), and that change's propagation looks for
    the anchors holding the row before this one has written it there, so it does not
    wait for this anchor. (A row the anchor held already is safe: its next change
    finds the anchor and waits for its lock.) ``changes_since()`` (changes of the
    channel noted since this propagation began reading, then since its last call)
    tells which to read again; each round reads one snapshot of its own
    (:func:`consistent_reads`).
    """
    anchor_model = channel.state_model().anchor_model
    again: dict[str, set[Any]] | None = touched
    while again:
        with consistent_reads(anchor_model):
            entered = propagator.apply(again, clock(), only, scope)
        if not entered:
            return
        noted = changes_since()
        again = _as_touched(entered) if noted is None else _among(noted, entered)


def _among(noted: dict[str, set[Any]], keys: set[Key]) -> dict[str, set[Any]]:
    """The changes of ``noted`` to rows of ``keys`` (pks compared as on the wire)."""
    wanted = {(instance_type, pk_repr(pk)) for instance_type, pk in keys}
    found: dict[str, set[Any]] = {}
    for instance_type, pks in noted.items():
        for pk in pks:
            if (instance_type, pk_repr(pk)) in wanted:
                found.setdefault(instance_type, set()).add(pk)
    return found


def _as_touched(keys: set[Key]) -> dict[str, set[Any]]:
    touched: dict[str, set[Any]] = {}
    for instance_type, pk in keys:
        touched.setdefault(instance_type, set()).add(pk)
    return touched


def replay(
    channel: ChannelSpec,
    propagator: Propagator,
    touched: dict[str, set[Any]],
    clock: Callable[[], float],
    ref: AnchorRef,
    distrust: Callable[[], None],
    changes_since: ChangesSince,
) -> None:
    """Apply to a just-(re)loaded anchor the changes propagated while it was read.

    The read saw the database as of a moment before them; re-reading them now
    brings the anchor to the present (:func:`settle`). If that fails the anchor
    cannot be trusted: ``distrust()`` drops it and closes its clients (they reload),
    and the error propagates.
    """
    if not touched:
        return
    try:
        settle(channel, propagator, touched, clock, changes_since, only=ref)
    except Exception:
        distrust()
        raise


def read_anchor(channel: ChannelSpec, root: Key, tstamp: float) -> dict[Key, FlatRecord]:
    """Every record of the anchor, read from the database as of one moment."""
    state_model = channel.state_model()
    with consistent_reads(state_model.anchor_model):
        return load_subtrees(ORM_RECORDS, state_model, [root], tstamp)
