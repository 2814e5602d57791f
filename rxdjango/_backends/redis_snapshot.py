"""A hot Redis anchor's state, read page by page while a client takes it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .._change import FlatRecord
from .._state_model import Key
from .base import Snapshot
from .redis_keys import key_field
from .redis_records import StoredRecord, decode_record

__all__ = ["SCAN_PAGE", "StreamedSnapshot"]

#: Records read per round trip when a snapshot streams from Redis.
SCAN_PAGE = 100


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

    A record written after ``tstamp`` is sent with ``tstamp`` as its ``_tstamp``: a
    client's ``lastUpdate`` is the highest one it saw, and must not pass a change
    whose frames (after the end marker) it has not received yet, or a reconnect's
    catch-up would skip that change.
    """

    redis: Any = None
    rec: str = ""
    order: str = ""

    def records(self) -> Iterator[Any]:
        root = key_field(self.root)
        raw_root = self.redis.hget(self.rec, root)
        if raw_root is not None:
            yield StoredRecord(root, raw_root, ceiling=self.tstamp)
            del raw_root
        after = b"-"
        while True:
            names = self.redis.zrangebylex(self.order, after, b"+", start=0, num=SCAN_PAGE)
            if not names:
                return
            after = b"(" + names[-1]
            for name, raw in zip(names, self.redis.hmget(self.rec, names), strict=True):
                if raw is not None and name != root:  # gone meanwhile: its delete follows
                    yield StoredRecord(name, raw, ceiling=self.tstamp)

    def current(self, keys: Iterable[Key]) -> dict[Key, FlatRecord]:
        wanted = list(keys)
        if not wanted:
            return {}
        raws = self.redis.hmget(self.rec, [key_field(k) for k in wanted])
        found = {}
        for key, raw in zip(wanted, raws, strict=True):
            if raw:
                record = decode_record(raw)
                if record.tstamp > self.tstamp:  # see the class docstring
                    record = replace(record, tstamp=self.tstamp, _initial=None)
                found[key] = record
        return found
