"""The instance cache on Redis: anchor views, their reads and their writes.

Keys are named in :mod:`.redis_keys` (the layout) and records encoded in
:mod:`.redis_records`. Index entries are added before the anchor's records and
removed after them, so a crash in between leaves an entry too many (ignored when
the anchor does not hold the record), never one too few.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, cast

import orjson

from .._change import AnchorRef, FlatRecord
from .._hub import Target
from .._propagation import AnchorView, Emission
from .._protocol import CloseCode, Envelope
from .._state_model import Key
from ..conf import rx_settings
from .redis_client import is_cluster, publish_command
from .redis_keys import Keys, field_key, key_field, member_ref, ref_member
from .redis_records import decode_record, encode_change, encode_record

__all__ = ["RedisStore", "RedisView"]

#: Records written per command when a load lands.
WRITE_CHUNK = 1000


class RedisStore:
    """The :class:`~rxdjango._propagation.AnchorStore` on Redis.

    Views are opened for changes only while holding their anchor's lock, so they may
    read, compute and write without other writers interleaving.
    """

    def __init__(self, redis: Any, keys: Keys, epoch: str, envelope: Any, remember: Any) -> None:
        #: a sync ``redis.Redis``: redis-py's type hints mix sync and async results; typed Any
        self.redis = redis
        self.keys = keys
        self.epoch = epoch
        #: envelope(kind, anchor pk, payload, **extra) -> bytes published on the channel
        self.envelope = envelope
        #: HISTORY_SCRIPT, registered once by the backend
        self.remember = remember
        self.cluster = is_cluster(redis)
        self.publish_command = publish_command(redis)

    def write_anchor(
        self, ref: AnchorRef, records: dict[Key, FlatRecord], meta: dict[str, Any]
    ) -> None:
        """Store a loaded anchor and make it hot with ``meta`` (anchor lock held).

        Index entries first, then records, referrers and meta in one transaction: a
        crash in between leaves index entries too many, never too few.
        """
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
        tx.hset(self.keys.meta(ref), mapping=meta)
        tx.hdel(self.keys.meta(ref), "token", "lease_until")
        tx.execute()

    def purge(self, ref: AnchorRef) -> None:
        """Forget the anchor's keys, then its index entries (anchor lock held)."""
        held = [field_key(k) for k in self.redis.hkeys(self.keys.rec(ref))]
        self.redis.delete(*[k for k in self.keys.anchor_keys(ref) if not k.endswith(":watch")])
        self.redis.srem(self.keys.anchors(ref[0]), orjson.dumps(ref[1]))
        member = ref_member(ref)
        pipe = self.redis.pipeline(transaction=False)
        for key in held:
            pipe.srem(self.keys.index(key), member)
        pipe.execute()

    def anchors_containing(self, keys: Iterable[Key]) -> dict[Key, set[AnchorRef]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for key in wanted:
            pipe.smembers(self.keys.index(key))
        found: dict[Key, set[AnchorRef]] = {}
        for key, members in zip(wanted, pipe.execute(), strict=True):
            if members:
                found[key] = {member_ref(m) for m in members}
        return found

    def open(self, refs: Collection[AnchorRef], locked: bool = True) -> dict[AnchorRef, RedisView]:
        """Views of the hot anchors of ``refs``. Under their locks (``locked``) an anchor
        still marked ``unsent`` is one whose last writer died before publishing (on a
        cluster): its clients reload. Without the locks the mark may be a holder's
        publish under way, and it is left alone."""
        wanted = list(refs)
        if not wanted:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for ref in wanted:
            pipe.hmget(self.keys.meta(ref), "status", "epoch", "root", "unsent")
        views = {}
        unsent = []
        for ref, (status, epoch, root, left) in zip(wanted, pipe.execute(), strict=True):
            if status == b"hot" and epoch is not None and epoch.decode() == self.epoch and root:
                views[ref] = RedisView(self, ref, field_key(root))
                if left and locked:
                    unsent.append(ref)
        if unsent:
            self._reload_clients(unsent)
        return views

    def _reload_clients(self, refs: list[AnchorRef]) -> None:
        """Anchors whose last change was written and never published (its process died
        in between, on a cluster): their clients reload, in every process."""
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            close = self.envelope(Envelope.CLOSE, ref[1], str(int(CloseCode.TIMEOUT)))
            pipe.execute_command(self.publish_command, self.keys.pub(ref[0]), close)
        pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            pipe.hdel(self.keys.meta(ref), "unsent")
        pipe.execute()

    def prefetch(self, wanted: Iterable[tuple[AnchorView, Iterable[Key]]]) -> None:
        """Read what each view lacks of its keys' records and referrers, in one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        readers = [
            reader
            for view, keys in wanted
            if (reader := cast(RedisView, view).queue_reads(pipe, keys))
        ]
        if not readers:
            return
        results = iter(pipe.execute())
        for reader in readers:
            reader(results)

    def save(self, views: Collection[AnchorView]) -> None:
        """Index the records the views now hold (before they are written), in one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        for view in views:
            member = ref_member(view.ref)
            for key in cast(RedisView, view).entered:
                pipe.sadd(self.keys.index(key), member)
        if len(pipe):
            pipe.execute()

    def emit(self, emissions: list[Emission]) -> None:
        """Every view's writes, history and frames in one transaction, then the index
        entries of the records they let go."""
        live = []
        for emission in emissions:
            view = cast(RedisView, emission.view)
            if view.dropped:
                view.emit_dropped(emission.frames)
            else:
                live.append((view, emission))
        self.prefetch((view, view.unread_targets()) for view, _ in live)
        if self.cluster:
            self._emit_per_anchor(live)
        else:
            tx = self.redis.pipeline(transaction=True)
            for view, emission in live:
                view.queue_writes(tx, emission)
                view.queue_frames(tx, emission)
            if len(tx):
                tx.execute()
        pipe = self.redis.pipeline(transaction=False)
        for view, emission in live:
            member = ref_member(view.ref)
            for key in view.removed:
                pipe.srem(self.keys.index(key), member)
            if self.cluster and emission.frames:
                pipe.hdel(self.keys.meta(view.ref), "unsent")  # published: see below
        if len(pipe):
            pipe.execute()

    def _emit_per_anchor(self, live: list[tuple[RedisView, Emission]]) -> None:
        """On a cluster a transaction spans one slot: each anchor's writes commit in one
        of their own, then every frame is published in one pipeline.

        Frames after writes, as on one server: a client whose snapshot lacks a change
        was read before its write, so after it subscribed, and the frame reaches it.
        Each write marks its anchor ``unsent`` until the frames are out: if the process
        dies in between, the change is propagated again from the change log, finds
        nothing new, and the mark makes the anchor's clients reload instead.
        """
        for view, emission in live:
            tx = self.redis.pipeline(transaction=True)
            view.queue_writes(tx, emission)
            if emission.frames:
                tx.hset(self.keys.meta(view.ref), "unsent", "1")
            if len(tx):
                tx.execute()
        pipe = self.redis.pipeline(transaction=False)
        for view, emission in live:
            view.queue_frames(pipe, emission)
        if len(pipe):
            pipe.execute()


class RedisView:
    """A hot anchor in Redis: reads on demand (batched), writes once, atomically.

    Record and reference changes are kept here until the store emits them: it writes
    them, appends the history and publishes the frames in one transaction (on a
    cluster, the frames right after it).
    """

    def __init__(self, store: RedisStore, ref: AnchorRef, root: Key) -> None:
        self.store = store
        self.redis = store.redis
        self.keys = store.keys
        self.ref = ref
        self.root = root
        self._records: dict[Key, FlatRecord | None] = {}
        self._refby_base: dict[Key, set[Key]] = {}
        #: referrer changes not yet written: target -> {referrer: present?}
        self._refby_ops: dict[Key, dict[Key, bool]] = {}
        self._written: set[Key] = set()
        #: written and not held before: to index
        self.entered: set[Key] = set()
        self.removed: set[Key] = set()
        self.dropped = False

    # -- reads ------------------------------------------------------------------

    def prefetch(self, keys: Iterable[Key]) -> None:
        self.store.prefetch([(self, keys)])

    def queue_reads(self, pipe: Any, keys: Iterable[Key]) -> Callable[[Iterator[Any]], None] | None:
        """Queue on ``pipe`` the reads of what this view lacks of ``keys``; returns what
        takes their results (from the pipeline's results, in order), or None."""
        wanted = list(dict.fromkeys(keys))
        records = [k for k in wanted if k not in self._records]
        referrers = [k for k in wanted if k not in self._refby_base]
        if records:
            pipe.hmget(self.keys.rec(self.ref), [key_field(k) for k in records])
        if referrers:
            pipe.hmget(self.keys.refby(self.ref), [key_field(k) for k in referrers])

        def take(results: Iterator[Any]) -> None:
            if records:
                for key, raw in zip(records, next(results), strict=True):
                    self._records[key] = decode_record(raw) if raw is not None else None
            if referrers:
                for key, raw in zip(referrers, next(results), strict=True):
                    self._refby_base[key] = _decode_keys(raw)

        return take if records or referrers else None

    def get(self, key: Key) -> FlatRecord | None:
        if key not in self._records:
            self.prefetch([key])
        return self._records[key]

    def holds(self, keys: Iterable[Key]) -> set[Key]:
        wanted = set(keys)
        self.prefetch(wanted)
        return {key for key in wanted if self._records.get(key) is not None}

    def referrers_of(self, key: Key) -> set[Key]:
        if key not in self._refby_base:
            self.prefetch([key])
        current = set(self._refby_base[key])
        for referrer, present in self._refby_ops.get(key, {}).items():
            if present:
                current.add(referrer)
            else:
                current.discard(referrer)
        return current

    def all_records(self) -> dict[Key, FlatRecord]:
        for raw_key, raw in self.redis.hgetall(self.keys.rec(self.ref)).items():
            key = field_key(raw_key)
            if key not in self._records:
                self._records[key] = decode_record(raw)
        return {key: record for key, record in self._records.items() if record is not None}

    # -- changes ----------------------------------------------------------------

    def put(self, record: FlatRecord) -> FlatRecord | None:
        previous = self.get(record.key)
        if previous is not None:
            for target in previous.refs:
                self._refby_ops.setdefault(target, {})[record.key] = False
        for target in record.refs:
            self._refby_ops.setdefault(target, {})[record.key] = True
        self._records[record.key] = record
        self._written.add(record.key)
        if previous is None:
            self.entered.add(record.key)
        self.removed.discard(record.key)
        return previous

    def remove(self, key: Key) -> FlatRecord | None:
        record = self.get(key)
        if record is None:
            return None
        for target in record.refs:
            self._refby_ops.setdefault(target, {})[key] = False
        self._records[key] = None
        self.removed.add(key)
        self._written.discard(key)
        self.entered.discard(key)
        return record

    def drop(self) -> None:
        self.dropped = True

    def unread_targets(self) -> list[Key]:
        """Records whose referrers changed and were never read (read before writing)."""
        return [t for t in self._refby_ops if t not in self._refby_base]

    def queue_writes(self, tx: Any, emission: Emission) -> None:
        """Queue on ``tx`` this view's writes, history and frames (referrers read)."""
        rec, refby = self.keys.rec(self.ref), self.keys.refby(self.ref)
        if self._written:
            tx.hset(
                rec,
                mapping={
                    key_field(k): encode_record(r)
                    for k in self._written
                    if (r := self._records[k]) is not None
                },
            )
        if self.entered:
            tx.zadd(self.keys.order(self.ref), {key_field(k): 0 for k in self.entered})
        if self.removed:
            tx.hdel(rec, *[key_field(k) for k in self.removed])
            tx.zrem(self.keys.order(self.ref), *[key_field(k) for k in self.removed])
        for target in self._refby_ops:
            referrers = self.referrers_of(target)
            if referrers:
                tx.hset(refby, key_field(target), _encode_keys(referrers))
            else:
                tx.hdel(refby, key_field(target))
        if emission.changes:
            # EVAL, not the registered script: a script in a pipeline costs a round trip
            # of its own to check Redis has it (Redis caches it by its hash anyway).
            tx.execute_command(
                "EVAL",
                self.store.remember.script,
                2,
                self.keys.hist(self.ref),
                self.keys.meta(self.ref),
                int(rx_settings.RX_HISTORY_SIZE),
                repr(emission.changes[0].tstamp),
                *[encode_change(c) for c in emission.changes],
            )

    def queue_frames(self, pipe: Any, emission: Emission) -> None:
        """Queue on ``pipe`` the publication of the emission's frames."""
        channel = self.keys.pub(self.ref[0])
        for to, frame in emission.frames:
            pipe.execute_command(
                self.store.publish_command,
                channel,
                self.store.envelope(
                    Envelope.FRAME, self.ref[1], frame, target=to, r=emission.retained
                ),
            )

    def emit_dropped(self, frames: list[tuple[Target, str]]) -> None:
        """The anchor row is gone: its clients get its delete, then the anchor is forgotten."""
        held = [field_key(k) for k in self.redis.hkeys(self.keys.rec(self.ref))]
        channel = self.keys.pub(self.ref[0])
        messages = [
            self.store.envelope(Envelope.FRAME, self.ref[1], frame, target=target)
            for target, frame in frames
        ]
        messages.append(self.store.envelope(Envelope.GONE, self.ref[1], ""))
        tx = self.redis.pipeline(transaction=True)
        tx.delete(*self.keys.anchor_keys(self.ref))
        # On a cluster the channel is in another slot: published once the delete is done.
        pipe = self.redis.pipeline(transaction=False) if self.store.cluster else tx
        for message in messages:
            pipe.execute_command(self.store.publish_command, channel, message)
        tx.execute()
        if pipe is not tx:
            pipe.execute()
        self.redis.srem(self.keys.anchors(self.ref[0]), orjson.dumps(self.ref[1]))
        self._unindex(held)

    def _unindex(self, keys: Iterable[Key]) -> None:
        member = ref_member(self.ref)
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.srem(self.keys.index(key), member)
        pipe.execute()


def _encode_keys(keys: Iterable[Key]) -> bytes:
    return orjson.dumps(sorted(([k[0], k[1]] for k in keys), key=repr))


def _decode_keys(raw: bytes | None) -> set[Key]:
    if raw is None:
        return set()
    return {(t, pk) for t, pk in orjson.loads(raw)}
