"""Loading a Redis anchor: one loader per anchor in the deployment, and nothing missed.

A cold anchor is loaded by the one caller (of any process) that wins its lease
(``BEGIN_SCRIPT``); the others wait, and take over if the lease runs out. The loader
notes the channel's journal position, reads the anchor at one moment of the
database, writes it under the anchor's lock, then replays every change journaled
since that position. A hot anchor is served as a :class:`~.redis_snapshot.StreamedSnapshot`,
or as a catch-up from its history. :class:`Loading` is that part of
:class:`~.redis_backend.RedisBackend`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _telemetry
from .._audience import assign_all
from .._change import AnchorRef
from .._propagation import Propagator
from .._protocol import CloseCode, Envelope
from .._registry import ChannelSpec
from .._state_model import Key
from ..conf import rx_settings
from .base import (
    RETRY,
    ChangesSince,
    Hot,
    Load,
    Snapshot,
    Wait,
    read_anchor,
    replay,
    serve_snapshot,
)
from .memory_cache import changes_since
from .redis_fanout import envelope
from .redis_keys import Keys, key_field
from .redis_records import decode_change
from .redis_snapshot import StreamedSnapshot
from .redis_store import RedisStore

__all__ = ["LAYOUT", "Loading"]

logger = logging.getLogger("rxdjango")

#: The key layout of a cached anchor; an anchor written with another is loaded again.
LAYOUT = "4"
#: How long ``snapshot`` waits for the pub/sub subscription before giving up.
READY_TIMEOUT = 10.0
#: Longest one blocking wait for a load to end, in seconds.
WAIT_SLICE = 1.0
#: A position in a channel's journal: (entries ever added, last entry id).
JournalMark = tuple[int, str]


def journal_mark(info: dict[str, Any] | list[Any]) -> JournalMark:
    """The position ``XINFO STREAM``'s answer ``info`` describes (a dict, or the raw
    list of names and values a cluster transaction returns)."""
    if isinstance(info, list):
        info = {_text(name): value for name, value in zip(info[::2], info[1::2], strict=True)}
    last = info["last-generated-id"]
    return int(info["entries-added"]), last.decode() if isinstance(last, bytes) else last


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class Loading:
    """Leases, loads, journal replay and reads of hot anchors (a part of the backend)."""

    #: redis-py's type hints mix sync and async results; typed Any
    redis: Any
    keys: Keys
    epoch: str
    loads: int
    _begin: Any
    _watched: set[AnchorRef]
    _watched_lock: threading.Lock
    _lease_lock: threading.Lock

    if TYPE_CHECKING:  # provided by the backend

        def clock(self) -> float: ...
        def publish_message(self, channel: str, message: bytes) -> None: ...
        def _now_ms(self) -> float: ...
        def _ready(self) -> None: ...
        def _check_epoch(self) -> None: ...
        def _locked(
            self, refs: Iterable[AnchorRef], wait: bool = True
        ) -> AbstractContextManager[bool]: ...
        def _purge(self, ref: AnchorRef) -> None: ...
        def _store(self) -> RedisStore: ...
        def _propagator(self, channel: ChannelSpec) -> Propagator: ...
        def _renew_watch(self, pipe: Any, ref: AnchorRef, deadline: float) -> None: ...
        def _watch_deadline(self) -> float: ...

    def snapshot(
        self, channel: ChannelSpec, anchor_pk: Any, since: float | None = None
    ) -> Snapshot | None:
        """The anchor's records: from Redis if hot, else loaded by exactly one process
        (:func:`~.base.serve_snapshot`; the lease lasts ``RX_LOAD_TIMEOUT``)."""
        self._ready()
        ref: AnchorRef = (channel.channel_id, anchor_pk)
        meta = self.keys.meta(ref)
        root = (channel.state_model().root.instance_type, anchor_pk)
        lease_ms = int(float(rx_settings.RX_LOAD_TIMEOUT) * 1000)

        def begin() -> Hot | Wait | Load:
            token = uuid.uuid4().hex
            decision = self._begin(
                keys=[meta], args=[self.epoch, token, lease_ms, key_field(root), LAYOUT]
            )
            verdict = decision[0].decode()
            if verdict == "hot":
                return Hot(self._read(channel, ref, since))
            if verdict == "wait":
                # Woken when the load ends, else when its lease does (its loader died).
                left = int(decision[1]) / 1000
                return Wait(left, woken=lambda seconds: self._await_load(ref, seconds))
            if verdict == "stale":
                self._drop_stale(ref)
                return Wait(0)
            return Load(token)

        return serve_snapshot(begin, lambda token: self._load(channel, ref, root, token), since)

    def _await_load(self, ref: AnchorRef, seconds: float) -> None:
        """Block until a load of ``ref`` ends (in any process) or ``seconds`` pass (at
        most :data:`WAIT_SLICE`: a client's socket timeout may be shorter). A woken
        waiter passes the wake on, so every waiter wakes."""
        loaded = self.keys.loaded(ref)
        with suppress(RedisTimeoutError):
            if self.redis.blpop([loaded], timeout=round(max(0.001, min(seconds, WAIT_SLICE)), 3)):
                self._loaded(ref)

    def _loaded(self, ref: AnchorRef) -> None:
        """Wake one waiter of the anchor's load (each passes it on); the wake outlives
        nobody's wait by long."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.keys.loaded(ref), "1")
        pipe.ltrim(self.keys.loaded(ref), 0, 0)
        pipe.pexpire(self.keys.loaded(ref), int(WAIT_SLICE * 1000))
        pipe.execute()

    def _drop_stale(self, ref: AnchorRef) -> None:
        """Purge an anchor cached in an older epoch or key layout."""
        with self._locked([ref]):
            self._check_epoch()  # the anchor may be newer than what we knew
            epoch, layout = self.redis.hmget(self.keys.meta(ref), "epoch", "layout")
            if (epoch is not None and epoch.decode() != self.epoch) or (layout != LAYOUT.encode()):
                self._purge(ref)

    def _load(self, channel: ChannelSpec, ref: AnchorRef, root: Key, token: str) -> object | None:
        """Load the anchor and make it hot; None if its row does not exist. However it
        ends, the clients waiting for it are woken."""
        try:
            return self._load_once(channel, ref, root, token)
        finally:
            with suppress(RedisError):
                self._loaded(ref)

    def _load_once(
        self, channel: ChannelSpec, ref: AnchorRef, root: Key, token: str
    ) -> object | None:
        channel_id = ref[0]
        self.redis.sadd(self.keys.anchors(channel_id), orjson.dumps(ref[1]))
        mark = self._journal_position(channel_id)
        tstamp = self.clock()
        try:
            records = read_anchor(channel, root, tstamp)
        except BaseException:
            self._abandon(ref, token)
            raise
        with self._locked([ref]):
            status, owner = self.redis.hmget(self.keys.meta(ref), "status", "token")
            if status != b"heating" or owner is None or owner.decode() != token:
                return RETRY  # cleared, or taken over after our lease ran out
            if root not in records:
                self._purge(ref)
                return None
            self._write_loaded(channel, ref, records, tstamp)
            self.loads += 1
            if not self._replay(channel, ref, mark):
                # Hot for a moment: a client that began reading it reloads too.
                self._close_clients(ref)
                return RETRY
        return True

    def _replay(self, channel: ChannelSpec, ref: AnchorRef, mark: JournalMark) -> bool:
        """Apply the changes journaled since ``mark`` to the anchor just written from a
        read that saw the database before them (anchor lock held).

        False if the journal lost some of them: the anchor is purged, the caller loads
        again. If applying them fails the anchor cannot be trusted: purged, clients reload.
        """
        touched, mark = self._journal_since(ref[0], *mark)
        if touched is None:
            self._purge(ref)
            return False

        def distrust() -> None:
            self._purge(ref)
            self._close_clients(ref)

        changes = self._changes_after(ref[0], mark)
        replay(channel, self._propagator(channel), touched, self.clock, ref, distrust, changes)
        return True

    def _close_clients(self, ref: AnchorRef) -> None:
        """Close the anchor's clients in every process with 4408 (they reload)."""
        self.publish_message(
            self.keys.pub(ref[0]), envelope(Envelope.CLOSE, ref[1], str(int(CloseCode.TIMEOUT)))
        )

    def _abandon(self, ref: AnchorRef, token: str) -> None:
        """A failed loader gives its lease back at once (callers need not wait it out)."""
        try:
            status, owner = self.redis.hmget(self.keys.meta(ref), "status", "token")
            if status == b"heating" and owner is not None and owner.decode() == token:
                self.redis.hset(self.keys.meta(ref), "lease_until", 0)
        except RedisError:
            _telemetry.redis_errors.inc()
            logger.warning("rxdjango: could not release the load lease of %s", ref)

    def _journal_position(self, channel_id: str) -> JournalMark:
        try:
            info = self.redis.xinfo_stream(self.keys.journal(channel_id))
        except ResponseError:
            return 0, "0-0"  # no journal yet
        return journal_mark(info)

    def _changes_after(self, channel_id: str, mark: JournalMark) -> ChangesSince:
        """What the channel's journal gained after ``mark``, then after each call."""
        position = [mark]

        def since_last() -> dict[str, set[Any]] | None:
            touched, position[0] = self._journal_since(channel_id, *position[0])
            return touched

        return since_last

    def _journal_since(
        self, channel_id: str, added_before: int, last_id: str
    ) -> tuple[dict[str, set[Any]] | None, JournalMark]:
        """Change batches journaled after the mark (None if some were trimmed away),
        and the journal's position after them.

        The count and the entries are read in one transaction: other processes append
        to the journal meanwhile (counted apart, an append in between would look like
        an entry lost, and the anchor would be dropped under the clients reading it).
        """
        journal = self.keys.journal(channel_id)
        tx = self.redis.pipeline(transaction=True)
        tx.xinfo_stream(journal)
        tx.xrange(journal, min=f"({last_id}")
        info, entries = tx.execute(raise_on_error=False)
        if isinstance(info, ResponseError):  # no journal (any more)
            return ({} if added_before == 0 else None), (0, "0-0")
        if isinstance(info, Exception):
            raise info
        position = journal_mark(info)
        added_now = position[0]
        if added_now < added_before or len(entries) != added_now - added_before:
            return None, position
        touched: dict[str, set[Any]] = {}
        for _, fields in entries:
            if isinstance(fields, list):  # unparsed, from a cluster transaction
                fields = dict(zip(fields[::2], fields[1::2], strict=True))
            for kind, pks in orjson.loads(fields[b"t"]).items():
                touched.setdefault(kind, set()).update(pks)
        return touched, position

    def _write_loaded(
        self, channel: ChannelSpec, ref: AnchorRef, records: dict[Key, Any], tstamp: float
    ) -> None:
        root = (channel.state_model().root.instance_type, ref[1])
        assigned = assign_all(records, root, channel.state_model())
        meta = {
            "status": "hot",
            "epoch": self.epoch,
            # Later than every change the load read: what a client that got this
            # state has seen (the end marker), proven complete after the load.
            "applied": repr(self.clock()),
            "complete_after": repr(tstamp),
            "last_seen": int(self._now_ms()),
            "layout": LAYOUT,
        }
        self._store().write_anchor(ref, assigned, meta)

    def _read(self, channel: ChannelSpec, ref: AnchorRef, since: float | None) -> Snapshot | None:
        """A hot anchor's snapshot (None if it stopped being hot): its meta and history
        now, its records streamed as the client takes them (:class:`StreamedSnapshot`)."""
        tx = self.redis.pipeline(transaction=True)
        tx.hmget(self.keys.meta(ref), "status", "epoch", "applied", "complete_after")
        if since is not None:
            tx.lrange(self.keys.hist(ref), 0, -1)
        with self._lease_lock:  # a release of this anchor decided before lands before
            with self._watched_lock:
                watched = ref in self._watched
            if watched:  # from now on this process's heartbeat renews the lease
                self._renew_watch(tx, ref, self._watch_deadline())
            (status, epoch, applied, complete_after), *rest = tx.execute()
        if status != b"hot" or epoch is None or epoch.decode() != self.epoch:
            return None
        root = (channel.state_model().root.instance_type, ref[1])
        snapshot = StreamedSnapshot(
            root,
            float(applied),
            redis=self.redis,
            rec=self.keys.rec(ref),
            order=self.keys.order(ref),
        )
        if since is None:
            return snapshot
        changes = None
        if not channel.many:
            history = [decode_change(raw) for raw in rest[0]]
            changes = changes_since(history, float(complete_after), since)
        if changes is None:
            snapshot.resync = True  # the history cannot prove a catch-up complete
        else:
            snapshot.partial, snapshot.changes = True, changes
        return snapshot
