"""Names of the library's Redis keys, and how records and anchors are named in them.

Per anchor (all under one hash tag, so multi-key transactions and scripts run
on Redis Cluster)::

    <p>:{<channel>|<pk>}:rec     hash  record key -> header "\\n" initial_state JSON
    <p>:{<channel>|<pk>}:ord     zset  the same record keys, score 0 (read in key order,
                                       page by page, each exactly once)
    <p>:{<channel>|<pk>}:refby   hash  record key -> keys of the records referencing it
    <p>:{<channel>|<pk>}:meta    hash  status, epoch, root, lease, tstamps (and, on a
                                       cluster, "unsent" between a write and its frames)
    <p>:{<channel>|<pk>}:hist    list  "<tstamp>|<change>" for reconnect catch-up
    <p>:{<channel>|<pk>}:watch   zset  process id -> deadline of its heartbeat (ms)
    <p>:{<channel>|<pk>}:lock    string  orders propagation, loads and drops of the anchor
    <p>:{<channel>|<pk>}:wake    list    woken waiters of that lock (redis_locks)
    <p>:{<channel>|<pk>}:loaded  list    wakes the clients waiting for a load to end

Per channel (hash tag of the channel)::

    <p>:{<channel>}:anchors  set     anchor pks (JSON) with keys in Redis
    <p>:{<channel>}:journal  stream  every change batch (loaders replay what they missed)

Across channels: ``<p>:idx:<record key>`` (set of anchor refs holding the
record), ``<p>:{user|<id>}:conns`` (a user's connections, leases renewed by each
process's heartbeat), ``<p>:epoch`` and ``<p>:clock``.

Pub/sub channels: ``<p>:pub:<channel>`` (frames and events of the channel's anchors)
and ``<p>:ctl`` (control messages between processes); sharded on a cluster.
"""

from __future__ import annotations

from typing import Any

import orjson

from .._change import AnchorRef
from .._state_model import Key

__all__ = ["Keys", "field_key", "key_field", "member_ref", "ref_member"]


def key_field(key: Key) -> bytes:
    return orjson.dumps([key[0], key[1]])


def field_key(raw: bytes | str) -> Key:
    instance_type, pk = orjson.loads(raw)
    return (instance_type, pk)


def ref_member(ref: AnchorRef) -> bytes:
    return orjson.dumps([ref[0], ref[1]])


def member_ref(raw: bytes | str) -> AnchorRef:
    channel_id, pk = orjson.loads(raw)
    return (channel_id, pk)


class Keys:
    """Names of every Redis key the library uses, under ``RX_REDIS_PREFIX``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch = f"{prefix}:epoch"
        self.clock = f"{prefix}:clock"
        self.control = f"{prefix}:ctl"
        self.pub_pattern = f"{prefix}:pub:*"
        #: zset process id -> lease deadline of every serving process
        self.processes = f"{prefix}:processes"

    def lease(self, name: str) -> str:
        """A deployment-wide lease (the change relay's)."""
        return f"{self.prefix}:lease:{{{name}}}"

    def _anchor(self, ref: AnchorRef, part: str) -> str:
        return f"{self.prefix}:{{{ref[0]}|{orjson.dumps(ref[1]).decode()}}}:{part}"

    def rec(self, ref: AnchorRef) -> str:
        return self._anchor(ref, "rec")

    def order(self, ref: AnchorRef) -> str:
        return self._anchor(ref, "ord")

    def refby(self, ref: AnchorRef) -> str:
        return self._anchor(ref, "refby")

    def meta(self, ref: AnchorRef) -> str:
        return self._anchor(ref, "meta")

    def hist(self, ref: AnchorRef) -> str:
        return self._anchor(ref, "hist")

    def watch(self, ref: AnchorRef) -> str:
        return self._anchor(ref, "watch")

    def anchor_keys(self, ref: AnchorRef) -> list[str]:
        return [
            self.rec(ref),
            self.order(ref),
            self.refby(ref),
            self.meta(ref),
            self.hist(ref),
            self.watch(ref),
        ]

    def anchors(self, channel_id: str) -> str:
        return f"{self.prefix}:{{{channel_id}}}:anchors"

    def lock(self, ref: AnchorRef) -> tuple[str, str]:
        """The anchor's lock and its wake list (kept apart from the anchor's data: a
        purge under the lock leaves the lock alone)."""
        return self._anchor(ref, "lock"), self._anchor(ref, "wake")

    def loaded(self, ref: AnchorRef) -> str:
        """Pushed to when a load of the anchor ends: its waiters stop waiting."""
        return self._anchor(ref, "loaded")

    def journal(self, channel_id: str) -> str:
        return f"{self.prefix}:{{{channel_id}}}:journal"

    def connections(self, user_id: Any) -> str:
        """A user's connections in every process: set of ``<process id>:<connection id>``."""
        return f"{self.prefix}:{{user|{orjson.dumps(user_id).decode()}}}:conns"

    def index(self, key: Key) -> str:
        return f"{self.prefix}:idx:" + key_field(key).decode()

    def pub(self, channel_id: str) -> str:
        return f"{self.prefix}:pub:{channel_id}"
