"""The production backend: instance cache and fan-out on one Redis, many processes.

Selected when ``REDIS_URL`` is set. Every ASGI process (and every process
that commits changes: management commands, task workers) shares the cache;
a change is propagated once, by the process that committed it, and
published once per anchor.

Invariants:

* Propagation, the end of a load and dropping an anchor take the channel's
  lock, so records, history and frames of one channel change in one order.
* An anchor is hot only in the current *epoch*. The epoch changes when Redis
  lost data (FLUSHALL, restart) or a change could not be applied; every
  process then closes its clients with 4408, and they reload with ``resync``.
* Nothing counts watchers: each process keeps a lease per watched anchor,
  renewed by its heartbeat, so a crashed process stops counting by itself.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

import orjson
import redis
from django.utils.module_loading import import_string
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from . import _codec, _loader
from ._audience import assign_all
from ._backend import Snapshot
from ._cache import changes_since
from ._consistent_reads import consistent_reads
from ._hub import Hub, Subscriber, only_user
from ._loader import FlatRecord
from ._propagation import AnchorRef, Propagator
from ._protocol import CloseCode
from ._redis_fanout import Listener, envelope
from ._redis_store import (
    HISTORY_SCRIPT,
    Keys,
    RedisStore,
    StoredRecord,
    decode_change,
    decode_record,
    encode_record,
    field_key,
    key_field,
    ref_member,
)
from ._state_model import Key, pk_repr
from .conf import rx_settings
from .exceptions import RxDjangoError

if TYPE_CHECKING:
    from .channels import ContextChannel

__all__ = ["RedisBackend", "redis_backend"]

logger = logging.getLogger("rxdjango")

#: Longest a propagation may hold a channel's lock before Redis frees it.
LOCK_TIMEOUT = 60.0
#: Change batches kept per channel for loaders to replay.
JOURNAL_SIZE = 10_000
#: Records written per command when a load lands.
WRITE_CHUNK = 1000
#: The key layout of a cached anchor; an anchor written with another is loaded again.
LAYOUT = "3"
#: Records read per round trip when a snapshot streams from Redis.
SCAN_PAGE = 100
#: How long ``snapshot`` waits for the pub/sub subscription before giving up.
READY_TIMEOUT = 10.0

#: Strictly increasing server time shared by every process. KEYS: clock.
CLOCK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if now <= last then now = last + 0.000001 end
local text = string.format('%.6f', now)
redis.call('SET', KEYS[1], text)
return text
"""

#: The epoch of this Redis run. KEYS: epoch. ARGV: run id, candidate, known epoch
#: to replace ('' to keep any epoch minted for this run). Returns {epoch, minted}.
EPOCH_SCRIPT = """
local current = redis.call('GET', KEYS[1])
local prefix = ARGV[1] .. ':'
if current and string.sub(current, 1, string.len(prefix)) == prefix then
  if ARGV[3] == '' or current ~= ARGV[3] then return {current, 0} end
end
local fresh = prefix .. ARGV[2]
redis.call('SET', KEYS[1], fresh)
return {fresh, 1}
"""

#: Decide who loads a cold anchor. KEYS: meta. ARGV: epoch, token, lease ms, root, layout.
#: Returns {'hot'}, {'wait', ms}, {'stale'} (hot in an old epoch, or written by a
#: version of the library with another key layout) or {'load'}.
BEGIN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', KEYS[1], 'status', 'epoch', 'lease_until', 'layout')
if m[2] == ARGV[1] then
  if m[1] == 'hot' and m[4] == ARGV[5] then return {'hot'} end
  if m[1] == 'hot' then return {'stale'} end
  if m[1] == 'heating' and tonumber(m[3]) > now then return {'wait', tonumber(m[3]) - now} end
elseif m[1] == 'hot' then
  return {'stale'}
end
redis.call('HSET', KEYS[1], 'status', 'heating', 'epoch', ARGV[1], 'token', ARGV[2],
  'lease_until', now + tonumber(ARGV[3]), 'root', ARGV[4])
return {'load'}
"""

#: Count a connection of a user unless the user has the limit. KEYS: conns. ARGV: member
#: (``<process>:<connection>``), limit ('' for none), key ttl ms, then the ids of the
#: live processes: connections of any other process (one that died) stop counting here.
#: Returns 1 if counted.
ADMIT_SCRIPT = """
local live = {}
for i = 4, #ARGV do live[ARGV[i]] = true end
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not live[string.match(member, '^[^:]*')] then redis.call('SREM', KEYS[1], member) end
end
if ARGV[2] ~= '' and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

#: How long a user's connection set outlives its last renewal (renewed a few times
#: within it while the user stays connected, so the key never outlives its users for long).
CONNECTIONS_TTL_MS = 3_600_000

#: Note when the last watcher of this process left. KEYS: meta, watch. ARGV: process, now ms.
RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'last_seen', ARGV[2]) end
return redis.call('ZCOUNT', KEYS[2], ARGV[2], '+inf')
"""

_RETRY = object()
#: A position in a channel's journal: (entries ever added, last entry id).
JournalMark = tuple[int, str]


class RedisBackend:
    """Cache, loading, expiry and fan-out for a deployment of many processes."""

    spans_processes = True

    def __init__(self, fanout: Hub, connect: Callable[[], redis.Redis], where: str) -> None:
        self.hub = fanout
        self.where = where
        self.keys = Keys(str(rx_settings.RX_REDIS_PREFIX))
        self.redis = connect()
        self.process_id = uuid.uuid4().hex
        #: Anchor loads from the database done by this process.
        self.loads = 0
        self._clock = self.redis.register_script(CLOCK_SCRIPT)
        self._epoch_script = self.redis.register_script(EPOCH_SCRIPT)
        self._begin = self.redis.register_script(BEGIN_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)
        self._remember = self.redis.register_script(HISTORY_SCRIPT)
        self._admit = self.redis.register_script(ADMIT_SCRIPT)
        #: connection id -> user id, for the connections this process serves
        self._connections: dict[str, Any] = {}
        #: user id -> when this process last renewed the TTL of the user's connection set
        self._connection_keys_renewed: dict[Any, float] = {}
        #: this process is in the live-process set (its heartbeat keeps it there)
        self._registered = False
        self._watched: set[AnchorRef] = set()
        self._watched_lock = threading.Lock()
        self._releases: SimpleQueue[AnchorRef] = SimpleQueue()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._needs_new_epoch = False
        self._offset_ms = 0.0
        self.epoch = ""
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="rxdjango-publish")
        self.listener = Listener(
            connect, self.keys, fanout, self._on_control, self._on_disconnect, self._on_reconnect
        )
        #: Connections open when pub/sub was lost: they may miss frames, so they reload.
        self._cut_off: set[Subscriber] = set()
        self._maintenance = threading.Thread(
            target=self._maintain, name="rxdjango-redis-maintenance", daemon=True
        )
        self._threads_started = False
        self._threads_lock = threading.Lock()

    def _serve(self) -> None:
        """Start listening and maintaining: only a process that serves clients needs to
        (one that only commits changes, like a management command, publishes)."""
        with self._threads_lock:
            if not self._threads_started:
                self._threads_started = True
                self.listener.start()
        self._serve_maintenance()

    def _serve_maintenance(self) -> None:
        with self._threads_lock:
            if not self._maintenance.is_alive() and not self._stopped.is_set():
                self._maintenance.start()
                atexit.register(self._last_chance)

    def _last_chance(self) -> None:
        """At exit: a change this process could not propagate still needs a new epoch."""
        if self._needs_new_epoch:
            try:
                self._ensure_epoch(replace=True)
            except RedisError:
                logger.error("rxdjango: Redis unreachable at exit; cached state may be stale")

    # -- time and epochs ------------------------------------------------------------

    def clock(self) -> float:
        """Redis server time, strictly increasing across every process."""
        return float(self._clock(keys=[self.keys.clock]))

    def _now_ms(self) -> float:
        return time.time() * 1000 + self._offset_ms

    def _ensure_epoch(self, replace: bool = False) -> None:
        """Adopt the current epoch, starting one if Redis lost it (or ``replace``)."""
        server = self.redis.info("server")
        if int(str(server["redis_version"]).split(".")[0]) < 7:
            raise RxDjangoError(
                f"RxDjango needs Redis 7 or later, {self.where} runs {server['redis_version']}"
            )
        run_id = str(server["run_id"])
        known = self.epoch if replace else ""
        raw, minted = self._epoch_script(
            keys=[self.keys.epoch], args=[run_id, uuid.uuid4().hex, known]
        )
        epoch = raw.decode()
        if minted:  # every process adopts it now, not at its next heartbeat
            self.redis.publish(self.keys.control, envelope("epoch", None, ""))
        if epoch != self.epoch:
            first = not self.epoch
            self.epoch = epoch
            if not first:
                logger.warning("rxdjango: Redis cache epoch changed; clients reload")
                self.hub.close_all(CloseCode.TIMEOUT)

    def _check_epoch(self) -> None:
        """One read: adopt a new epoch another process started (or start one if the
        key is gone) before trusting or writing any cached anchor."""
        current = self.redis.get(self.keys.epoch)
        if current is None or current.decode() != self.epoch:
            self._ensure_epoch()

    def _ready(self) -> None:
        """Before reading state for a client: subscribed, so no later frame is missed."""
        self._check_epoch()
        if self._threads_started and not self.listener.ready.wait(READY_TIMEOUT):
            raise RxDjangoError(f"Redis pub/sub at {self.where} is not reachable")

    def _on_disconnect(self) -> None:
        self._cut_off = self.hub.connections()

    def _on_reconnect(self) -> None:
        """Pub/sub is back. Connections that were open while it was lost may have missed
        frames: close them with 4408 (they catch up or resync). Those that arrived
        meanwhile waited for the subscription and missed nothing."""
        cut_off, self._cut_off = self._cut_off, set()
        try:
            self._ensure_epoch()
        except RedisError:
            logger.warning("rxdjango: could not check the Redis epoch after a reconnect")
        self.hub.close_all(CloseCode.TIMEOUT, only=cut_off)

    def _on_control(self, header: dict[str, Any], payload: str) -> None:
        kind = header.get("k")
        if kind == "all":
            self.hub.publish_all(payload)
        elif kind == "revoke":
            order = orjson.loads(payload)
            self.hub.close_user(order["u"], int(order["code"]), order["c"], header.get("a"))
        elif kind == "epoch":
            self._wake.set()
            try:
                self._ensure_epoch()
            except RedisError:
                logger.warning("rxdjango: could not read the new Redis epoch")

    # -- locking ----------------------------------------------------------------------

    @contextmanager
    def _locked(self, channel_id: str) -> Iterator[None]:
        lock = self.redis.lock(
            self.keys.lock(channel_id),
            timeout=LOCK_TIMEOUT,
            sleep=0.002,
            blocking_timeout=LOCK_TIMEOUT,
            thread_local=False,
        )
        if not lock.acquire():
            raise RxDjangoError(f"timed out waiting for the Redis lock of {channel_id}")
        try:
            yield
        finally:
            try:
                lock.release()
            except RedisError:
                logger.warning("rxdjango: the lock of %s expired before release", channel_id)

    def _store(self) -> RedisStore:
        """A store on the current epoch (cheap: the scripts are registered once)."""
        return RedisStore(self.redis, self.keys, self.epoch, envelope, self._remember)

    def _propagator(self, channel: type[ContextChannel]) -> Propagator:
        store = self._store()
        return Propagator(channel.state_model(), channel.channel_id, store)

    # -- changes ----------------------------------------------------------------------

    def process(
        self,
        channel: type[ContextChannel],
        touched: dict[str, set[Any]],
        only: AnchorRef | None = None,
    ) -> None:
        """Propagate a committed batch to the channel's hot anchors, in any process."""
        channel_id = channel.channel_id
        if self._needs_new_epoch:
            self._start_new_epoch()
        recovered = False
        try:
            if not self.redis.scard(self.keys.anchors(channel_id)):
                return  # nothing cached, nothing loading: nobody to tell
            with self._locked(channel_id):
                self._check_epoch()
                tstamp = self.clock()
                encoded = {kind: sorted(pks, key=repr) for kind, pks in touched.items()}
                self.redis.xadd(
                    self.keys.journal(channel_id),
                    {"t": _codec.encode_bytes(encoded)},
                    maxlen=JOURNAL_SIZE,
                    approximate=True,
                )
                try:
                    with consistent_reads(channel.state_model().anchor_model):
                        self._propagator(channel).apply(touched, tstamp, only)
                except RedisError:
                    raise
                except Exception:
                    self._recover(channel)
                    recovered = True
                    raise
        except Exception:
            if not recovered:
                # The cache may now miss this change: as soon as Redis answers, a new
                # epoch makes every client reload.
                self._needs_new_epoch = True
                self._start_new_epoch()
            raise

    def _start_new_epoch(self) -> None:
        """Start a new epoch now if Redis answers, else keep retrying in the background
        (this process may be a command that exits soon: it tries once more at exit)."""
        try:
            self._ensure_epoch(replace=True)
            self._needs_new_epoch = False
        except RedisError:
            self._serve_maintenance()
            self._wake.set()

    def _recover(self, channel: type[ContextChannel]) -> None:
        """Propagation failed midway: drop the channel's anchors, close their clients
        with 4408 (they reconnect and reload with resync). Channel lock held."""
        for ref in self._anchor_refs(channel.channel_id):
            self._purge(ref)
            self._close_clients(ref)

    # -- loading ------------------------------------------------------------------------

    def snapshot(
        self, channel: type[ContextChannel], anchor_pk: Any, since: float | None = None
    ) -> Snapshot | None:
        """The anchor's records: from Redis if hot, else loaded by exactly one process.

        Other callers wait while the loader holds its lease (``RX_LOAD_TIMEOUT``);
        if it dies or fails, the next caller loads instead.
        """
        self._ready()
        ref: AnchorRef = (channel.channel_id, anchor_pk)
        meta = self.keys.meta(ref)
        root = (channel.state_model().root.instance_type, anchor_pk)
        lease_ms = int(float(rx_settings.RX_LOAD_TIMEOUT) * 1000)
        pause = 0.005
        loaded = False
        while True:
            token = uuid.uuid4().hex
            decision = self._begin(
                keys=[meta], args=[self.epoch, token, lease_ms, key_field(root), LAYOUT]
            )
            verdict = decision[0].decode()
            if verdict == "hot":
                snapshot = self._read(channel, ref, since)
                if snapshot is None:
                    continue
                if loaded and since is not None:
                    snapshot.resync = True  # a fresh load proves nothing about the past
                return snapshot
            if verdict == "wait":
                time.sleep(min(pause, int(decision[1]) / 1000))
                pause = min(pause * 2, 0.2)
                continue
            if verdict == "stale":
                self._check_epoch()  # the anchor may be newer than what we knew
                with self._locked(ref[0]):
                    epoch, layout = self.redis.hmget(meta, "epoch", "layout")
                    if (epoch is not None and epoch.decode() != self.epoch) or (
                        layout != LAYOUT.encode()
                    ):
                        self._purge(ref)
                continue
            result = self._load(channel, ref, root, token)
            if result is None:
                return None
            loaded = loaded or result is not _RETRY

    def _load(
        self, channel: type[ContextChannel], ref: AnchorRef, root: Key, token: str
    ) -> object | None:
        """Load the anchor and make it hot; None if its row does not exist."""
        channel_id = ref[0]
        self.redis.sadd(self.keys.anchors(channel_id), orjson.dumps(ref[1]))
        mark = self._journal_position(channel_id)
        tstamp = self.clock()
        try:
            records = _read_anchor(channel, root, tstamp)
        except BaseException:
            self._abandon(ref, token)
            raise
        with self._locked(channel_id):
            status, owner = self.redis.hmget(self.keys.meta(ref), "status", "token")
            if status != b"heating" or owner is None or owner.decode() != token:
                return _RETRY  # cleared, or taken over after our lease ran out
            if root not in records:
                self._purge(ref)
                return None
            self._write_loaded(channel, ref, records, tstamp)
            self.loads += 1
            if not self._replay(channel, ref, mark):
                return _RETRY
        return True

    def _replay(self, channel: type[ContextChannel], ref: AnchorRef, mark: JournalMark) -> bool:
        """Apply the changes journaled since ``mark`` to the anchor just written from a
        read that saw the database before them (channel lock held).

        False if the journal lost some of them: the anchor is purged, the caller loads
        again. If applying them fails the anchor cannot be trusted: purged, clients reload.
        """
        replay = self._journal_since(ref[0], *mark)
        if replay is None:
            self._purge(ref)
            return False
        if replay:
            try:
                with consistent_reads(channel.state_model().anchor_model):
                    self._propagator(channel).apply(replay, self.clock(), only=ref)
            except Exception:
                self._purge(ref)
                self._close_clients(ref)
                raise
        return True

    def _close_clients(self, ref: AnchorRef) -> None:
        """Close the anchor's clients in every process with 4408 (they reload)."""
        self.redis.publish(
            self.keys.pub(ref[0]), envelope("close", ref[1], str(int(CloseCode.TIMEOUT)))
        )

    def _abandon(self, ref: AnchorRef, token: str) -> None:
        """A failed loader gives its lease back at once (callers need not wait it out)."""
        try:
            status, owner = self.redis.hmget(self.keys.meta(ref), "status", "token")
            if status == b"heating" and owner is not None and owner.decode() == token:
                self.redis.hset(self.keys.meta(ref), "lease_until", 0)
        except RedisError:
            logger.warning("rxdjango: could not release the load lease of %s", ref)

    def _journal_position(self, channel_id: str) -> JournalMark:
        try:
            info = self.redis.xinfo_stream(self.keys.journal(channel_id))
        except ResponseError:
            return 0, "0-0"  # no journal yet
        last = info["last-generated-id"]
        return int(info["entries-added"]), last.decode() if isinstance(last, bytes) else last

    def _journal_since(
        self, channel_id: str, added_before: int, last_id: str
    ) -> dict[str, set[Any]] | None:
        """Change batches journaled after the mark; None if some were trimmed away."""
        added_now, _ = self._journal_position(channel_id)
        entries = self.redis.xrange(self.keys.journal(channel_id), min=f"({last_id}")
        if added_now < added_before or len(entries) != added_now - added_before:
            return None
        touched: dict[str, set[Any]] = {}
        for _, fields in entries:
            for kind, pks in orjson.loads(fields[b"t"]).items():
                touched.setdefault(kind, set()).update(pks)
        return touched

    def _write_loaded(
        self, channel: type[ContextChannel], ref: AnchorRef, records: dict[Key, Any], tstamp: float
    ) -> None:
        root = (channel.state_model().root.instance_type, ref[1])
        records = assign_all(records, root, channel.state_model())
        member = ref_member(ref)
        pipe = self.redis.pipeline(transaction=False)
        for key in records:
            pipe.sadd(self.keys.index(key), member)
        pipe.execute()
        referrers: dict[Key, list[Key]] = {}
        for record in records.values():
            for target in record.refs:
                referrers.setdefault(target, []).append(record.key)
        encoded = [(key_field(k), encode_record(r)) for k, r in records.items()]
        tx = self.redis.pipeline(transaction=True)
        rec, refby = self.keys.rec(ref), self.keys.refby(ref)
        order = self.keys.order(ref)
        tx.delete(rec, order, refby, self.keys.hist(ref))
        for start in range(0, len(encoded), WRITE_CHUNK):
            tx.hset(rec, mapping=dict(encoded[start : start + WRITE_CHUNK]))
            tx.zadd(order, {name: 0 for name, _ in encoded[start : start + WRITE_CHUNK]})
        items = [
            (key_field(k), orjson.dumps(sorted(([t, pk] for t, pk in v), key=repr)))
            for k, v in referrers.items()
        ]
        for start in range(0, len(items), WRITE_CHUNK):
            tx.hset(refby, mapping=dict(items[start : start + WRITE_CHUNK]))
        tx.hset(
            self.keys.meta(ref),
            mapping={
                "status": "hot",
                "epoch": self.epoch,
                # Later than every change the load read: what a client that got this
                # state has seen (the end marker), proven complete after the load.
                "applied": repr(self.clock()),
                "complete_after": repr(tstamp),
                "last_seen": int(self._now_ms()),
                "layout": LAYOUT,
            },
        )
        tx.hdel(self.keys.meta(ref), "token", "lease_until")
        tx.execute()

    def _read(
        self, channel: type[ContextChannel], ref: AnchorRef, since: float | None
    ) -> Snapshot | None:
        """A hot anchor's snapshot (None if it stopped being hot): its meta and history
        now, its records streamed as the client takes them (:class:`StreamedSnapshot`)."""
        tx = self.redis.pipeline(transaction=True)
        tx.hmget(self.keys.meta(ref), "status", "epoch", "applied", "complete_after")
        if since is not None:
            tx.lrange(self.keys.hist(ref), 0, -1)
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

    # -- dropping -------------------------------------------------------------------------

    def _purge(self, ref: AnchorRef) -> None:
        """Forget the anchor's keys and index entries (channel lock held)."""
        held = [field_key(k) for k in self.redis.hkeys(self.keys.rec(ref))]
        self.redis.delete(*[k for k in self.keys.anchor_keys(ref) if not k.endswith(":watch")])
        self.redis.srem(self.keys.anchors(ref[0]), orjson.dumps(ref[1]))
        member = ref_member(ref)
        pipe = self.redis.pipeline(transaction=False)
        for key in held:
            pipe.srem(self.keys.index(key), member)
        pipe.execute()

    def _anchor_refs(self, channel_id: str) -> list[AnchorRef]:
        members = self.redis.smembers(self.keys.anchors(channel_id))
        return [(channel_id, orjson.loads(m)) for m in members]

    def clear(self, ref: AnchorRef) -> bool:
        """Drop a hot anchor; if clients watch it anywhere, reload it and send them the
        difference. A load in progress is invalidated (its clients get fresh data)."""
        from .channels import channel_by_id

        self._ready()
        channel = channel_by_id(ref[0])
        if channel is None:
            return False
        with self._locked(ref[0]):
            status, epoch = self.redis.hmget(self.keys.meta(ref), "status", "epoch")
            hot = status == b"hot" and epoch is not None and epoch.decode() == self.epoch
            if not hot:
                if status is not None:
                    self._purge(ref)
                return False
            if not self._watched_anywhere(ref):
                self._purge(ref)
                return True
            # Clients hold the cached state: reload it and send them the difference.
            # Changes propagated meanwhile reach them as usual and are replayed after.
            mark = self._journal_position(ref[0])
        root = (channel.state_model().root.instance_type, ref[1])
        fresh = _read_anchor(channel, root, self.clock())
        with self._locked(ref[0]):
            propagator = self._propagator(channel)
            view = propagator.store.open(ref)
            if view is not None:
                propagator.replace_all(view, fresh, self.clock())
                if not self._replay(channel, ref, mark):
                    self._close_clients(ref)  # they reconnect and load it again
        return True

    def _watched_anywhere(self, ref: AnchorRef) -> bool:
        return bool(self.redis.zcount(self.keys.watch(ref), self._now_ms(), "+inf"))

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self._serve()
        self.hub.subscribe(ref, subscriber)
        with self._watched_lock:
            self._watched.add(ref)

    def unsubscribe(self, ref: AnchorRef, subscriber: Subscriber) -> None:
        self.hub.unsubscribe(ref, subscriber)
        if self.hub.count(ref) > 0:
            return
        with self._watched_lock:
            self._watched.discard(ref)
        self._releases.put(ref)
        self._wake.set()

    def register(self, channel_id: str, subscriber: Subscriber) -> None:
        self._serve()
        self.hub.register(channel_id, subscriber)

    def unregister(self, channel_id: str, subscriber: Subscriber) -> None:
        self.hub.unregister(channel_id, subscriber)

    def notify(self, ref: AnchorRef, frame: str, user_id: Any = None) -> None:
        target = None if user_id is None else only_user(pk_repr(user_id))
        message = envelope("frame", ref[1], frame, target=target)
        self._publish(self.keys.pub(ref[0]), message)

    def broadcast_all(self, frame: str) -> None:
        self._publish(self.keys.control, envelope("all", None, frame))

    def admit_connection(self, user_id: Any, connection_id: str) -> bool:
        """Counted in Redis per user. A connection counts while its process is live:
        each process renews one lease per heartbeat (not one per connection), and a
        process that died stops counting at the next admission of that user."""
        self._serve()
        if not self._registered:  # before the first heartbeat, so others see us live
            self.redis.zadd(self.keys.processes, {self.process_id: self._watch_deadline()})
            self._registered = True
        limit = rx_settings.RX_MAX_CONNECTIONS_PER_USER
        member = f"{self.process_id}:{connection_id}"
        live = self.redis.zrangebyscore(self.keys.processes, self._now_ms(), "+inf")
        cap = "" if limit is None else limit
        admitted = self._admit(
            keys=[self.keys.connections(user_id)],
            args=[member, cap, CONNECTIONS_TTL_MS, self.process_id, *live],
        )
        if admitted:
            with self._watched_lock:
                self._connections[member] = user_id
                self._connection_keys_renewed[user_id] = time.monotonic()
        return bool(admitted)

    def release_connection(self, user_id: Any, connection_id: str) -> None:
        member = f"{self.process_id}:{connection_id}"
        with self._watched_lock:
            self._connections.pop(member, None)
        self._submit(self.redis.srem, self.keys.connections(user_id), member)

    def revoke(
        self, user_id: Any, code: int, channel_id: str | None = None, anchor: Any = None
    ) -> None:
        """Every process closes the user's sockets (this one included, through Redis)."""
        payload = _codec.encode_bytes({"u": user_id, "c": channel_id, "code": code})
        self._publish(self.keys.control, envelope("revoke", anchor, payload))

    def _publish(self, channel: str, message: bytes) -> None:
        """Publish without blocking an event loop (from async code it is handed off)."""
        self._submit(self.redis.publish, channel, message)

    def _submit(self, command: Callable[..., Any], *args: Any) -> None:
        """Run a Redis command now, or from an event loop in the background (logged)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            command(*args)
        else:
            self._publisher.submit(self._logged, command, *args)

    @staticmethod
    def _logged(command: Callable[..., Any], *args: Any) -> None:
        try:
            command(*args)
        except RedisError:
            logger.exception("rxdjango: Redis command failed in the background")

    def offer_created(self, channel: type[ContextChannel], pks: set[Any]) -> None:
        model = channel.state_model().anchor_model
        existing = sorted(model._default_manager.filter(pk__in=pks).values_list("pk", flat=True))
        if existing:
            payload = _codec.encode_bytes([pk_repr(pk) for pk in existing])
            self.redis.publish(self.keys.pub(channel.channel_id), envelope("offer", None, payload))

    # -- inspection --------------------------------------------------------------------------

    def is_cached(self, ref: AnchorRef) -> bool:
        if not self.epoch:  # a process that has not served yet (a shell, a command)
            self._check_epoch()
        status, epoch = self.redis.hmget(self.keys.meta(ref), "status", "epoch")
        return status == b"hot" and epoch is not None and epoch.decode() == self.epoch

    def cached_record(self, ref: AnchorRef, key: Key) -> FlatRecord | None:
        if not self.is_cached(ref):
            return None
        raw = self.redis.hget(self.keys.rec(ref), key_field(key))
        return None if raw is None else decode_record(raw)

    def holders(self, key: Key) -> set[AnchorRef]:
        store = self._store()
        return store.anchors_containing([key]).get(key, set())

    def is_idle(self, ref: AnchorRef) -> bool:
        return self.is_cached(ref) and not self._watched_anywhere(ref)

    def local_watchers(self, ref: AnchorRef) -> int:
        return self.hub.count(ref)

    def forget_everything(self) -> None:
        """Delete every key under the prefix (tests flush their database between runs)."""
        batch = []
        for name in self.redis.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                self.redis.delete(*batch)
                batch = []
        if batch:
            self.redis.delete(*batch)

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._threads_started:
            self.listener.stop()
        if self._maintenance.is_alive():
            self._maintenance.join(timeout=5)
        atexit.unregister(self._last_chance)
        self._publisher.shutdown(wait=True)
        self.redis.close()

    # -- maintenance: heartbeats, releases, expiry -------------------------------------------

    def _renew_watch(self, pipe: Any, ref: AnchorRef, deadline: float) -> None:
        """This process watches ``ref`` until ``deadline``. The lease key outlives the
        lease by the channel's TTL (idle time is counted from it), then goes by itself."""
        from .channels import channel_by_id

        channel = channel_by_id(ref[0])
        ttl = channel.get_cache_ttl() if channel is not None else rx_settings.RX_CACHE_TTL
        pipe.zadd(self.keys.watch(ref), {self.process_id: deadline})
        pipe.pexpireat(self.keys.watch(ref), int(deadline + float(ttl) * 1000) + 1000)

    def _watch_deadline(self) -> float:
        return self._now_ms() + 3000 * float(rx_settings.RX_REDIS_HEARTBEAT)

    def _maintain(self) -> None:
        next_beat = next_sweep = 0.0
        while not self._stopped.is_set():
            now = time.monotonic()
            self._wake.wait(max(0.0, min(next_beat, next_sweep) - now))
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self._drain_releases()
                now = time.monotonic()
                if now >= next_beat or self._needs_new_epoch:
                    self._heartbeat()
                    next_beat = now + float(rx_settings.RX_REDIS_HEARTBEAT)
                if now >= next_sweep:
                    self.expire()
                    next_sweep = time.monotonic() + _sweep_interval()
            except RedisError as error:
                logger.warning("rxdjango: Redis maintenance failed (%s); retrying", error)
                next_beat = time.monotonic() + 0.5
            except Exception:
                logger.exception("rxdjango: Redis maintenance failed")
                next_beat = next_sweep = time.monotonic() + 1.0

    def _heartbeat(self) -> None:
        """Renew this process's watch leases and notice lost data or a new epoch."""
        before = time.time()
        seconds, micros = self.redis.time()
        self._offset_ms = (seconds * 1000 + micros / 1000) - (before + time.time()) * 500
        if self._needs_new_epoch:
            self._ensure_epoch(replace=True)
            self._needs_new_epoch = False
        else:
            self._ensure_epoch()
        deadline = self._watch_deadline()
        with self._watched_lock:
            watched = list(self._watched)
            users = self._connection_keys_to_renew()
        pipe = self.redis.pipeline(transaction=False)
        for ref in watched:
            self._renew_watch(pipe, ref, deadline)
        if self._registered:
            pipe.zadd(self.keys.processes, {self.process_id: deadline})
            pipe.zremrangebyscore(self.keys.processes, "-inf", self._now_ms())
        for user_id in users:
            pipe.pexpire(self.keys.connections(user_id), CONNECTIONS_TTL_MS)
        pipe.execute()

    def _connection_keys_to_renew(self) -> list[Any]:
        """The users whose connection set was last renewed a third of its TTL ago
        (so a heartbeat costs a few commands, not one per connection)."""
        now = time.monotonic()
        connected = set(self._connections.values())
        for user_id in list(self._connection_keys_renewed):
            if user_id not in connected:
                del self._connection_keys_renewed[user_id]
        due = [
            user_id
            for user_id, renewed in self._connection_keys_renewed.items()
            if now - renewed > CONNECTIONS_TTL_MS / 3000
        ]
        for user_id in due:
            self._connection_keys_renewed[user_id] = now
        return due

    def _drain_releases(self) -> None:
        from .channels import channel_by_id

        while True:
            try:
                ref = self._releases.get_nowait()
            except Empty:
                return
            with self._watched_lock:
                if ref in self._watched:
                    continue  # watched again meanwhile
            now = int(self._now_ms())
            live = self._release(
                keys=[self.keys.meta(ref), self.keys.watch(ref)], args=[self.process_id, now]
            )
            channel = channel_by_id(ref[0])
            optimized = channel is not None and getattr(channel.Meta, "optimize_anchors", False)
            if optimized and not live:
                # Meta.optimize_anchors: an anchor nobody watches is not kept up to date.
                with self._locked(ref[0]):
                    if not self._watched_anywhere(ref):
                        self._purge(ref)

    def expire(self, dry_run: bool = False) -> list[AnchorRef]:
        """Drop (or only list) the anchors idle past their channel's cache TTL.

        Idle means no process holds a live watch lease; the idle time starts when
        the last watcher left or, for a process that died, when its lease ran out.
        Anchors of an older epoch are garbage and expire too.
        """
        from .channels import ContextChannel

        expired: list[AnchorRef] = []
        for channel in ContextChannel.get_registered_channels():
            ttl_ms = float(channel.get_cache_ttl()) * 1000
            for ref in self._anchor_refs(channel.channel_id):
                verdict = self._idleness(ref, ttl_ms)
                if verdict is _Idle.EXPIRED:
                    expired.append(ref)
                if dry_run or verdict is _Idle.KEEP:
                    continue
                with self._locked(ref[0]):
                    if self._idleness(ref, ttl_ms) is not _Idle.KEEP:
                        self._purge(ref)
                        self.redis.delete(self.keys.watch(ref))
        return expired

    def _idleness(self, ref: AnchorRef, ttl_ms: float) -> _Idle:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.meta(ref), "status", "epoch", "last_seen", "lease_until")
        pipe.zrange(self.keys.watch(ref), -1, -1, withscores=True)
        (status, epoch, last_seen, lease_until), newest_watch = pipe.execute()
        now = self._now_ms()
        if status is None:
            return _Idle.DEBRIS  # a set entry without data (a load that never started)
        if status == b"heating":
            return _Idle.KEEP if float(lease_until or 0) > now else _Idle.DEBRIS
        if epoch is None or epoch.decode() != self.epoch:
            return _Idle.EXPIRED  # cached in an older epoch: never served again
        last = float(last_seen or 0)
        if newest_watch:
            if newest_watch[0][1] > now:
                return _Idle.KEEP
            last = max(last, newest_watch[0][1])
        return _Idle.EXPIRED if now - last >= ttl_ms else _Idle.KEEP


@dataclass
class StreamedSnapshot(Snapshot):
    """Records read from Redis page by page while the client takes them, so a client
    that reads slowly (or not at all) costs this process one page, not the anchor.

    Pages follow the anchor's key index in order, so each record arrives once. They
    are not one atomic read: a record written meanwhile may arrive in either version,
    one created meanwhile may be missing. Each record is rendered from itself alone
    (it carries its children's audiences), and every change after the client
    subscribed reaches it after the end marker and sets absolute values, so what it
    holds then is the current state.
    """

    redis: Any = None
    rec: str = ""
    order: str = ""

    def records(self) -> Iterator[Any]:
        root = key_field(self.root)
        raw_root = self.redis.hget(self.rec, root)
        if raw_root is not None:
            yield StoredRecord(root, raw_root)
            del raw_root
        after = b"-"
        while True:
            names = self.redis.zrangebylex(self.order, after, b"+", start=0, num=SCAN_PAGE)
            if not names:
                return
            after = b"(" + names[-1]
            for name, raw in zip(names, self.redis.hmget(self.rec, names), strict=True):
                if raw is not None and name != root:  # gone meanwhile: its delete follows
                    yield StoredRecord(name, raw)

    def current(self, keys: Iterable[Key]) -> dict[Key, FlatRecord]:
        wanted = list(keys)
        if not wanted:
            return {}
        raws = self.redis.hmget(self.rec, [key_field(k) for k in wanted])
        return {k: decode_record(raw) for k, raw in zip(wanted, raws, strict=True) if raw}


def _read_anchor(channel: type[ContextChannel], root: Key, tstamp: float) -> dict[Key, Any]:
    """Every record of the anchor, as of one moment of the database."""
    state_model = channel.state_model()
    with consistent_reads(state_model.anchor_model):
        return _loader.load_subtrees(state_model, [root], tstamp)


class _Idle(Enum):
    KEEP = "keep"
    EXPIRED = "expired"
    #: Left by a loader that died; removed without being reported as an expiry.
    DEBRIS = "debris"


def redis_backend(fanout: Hub) -> RedisBackend:
    """The backend for ``RX_REDIS_CLIENT`` (a factory of clients, e.g. through Sentinel)
    or else ``REDIS_URL``."""
    factory_path = rx_settings.RX_REDIS_CLIENT
    if factory_path:
        factory = import_string(str(factory_path))
        return RedisBackend(fanout, factory, str(factory_path))
    url = str(rx_settings.REDIS_URL)

    def connect() -> redis.Redis:
        return redis.Redis.from_url(
            url,
            socket_keepalive=True,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    return RedisBackend(fanout, connect, url.split("@")[-1])


def _sweep_interval() -> float:
    """Seconds between expiry sweeps: a quarter of the shortest TTL, at most a minute."""
    from .channels import ContextChannel

    ttls = [float(c.get_cache_ttl()) for c in ContextChannel.get_registered_channels()]
    shortest = min(ttls, default=float(rx_settings.RX_CACHE_TTL))
    return max(0.05, min(60.0, shortest / 4))
