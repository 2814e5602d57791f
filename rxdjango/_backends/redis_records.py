"""How records and changes are encoded in Redis (three lines per record: who may see
it, its cache header, its ``initial_state`` JSON), and read back for clients."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import orjson

from .. import _codec
from .._audience import Audience
from .._change import Change, FlatRecord
from .._state_model import Key
from .redis_keys import field_key

__all__ = ["StoredRecord", "decode_change", "decode_record", "encode_change", "encode_record"]

_WIRE_ONLY = ("_tstamp", "_operation")


def encode_record(record: FlatRecord) -> bytes:
    """Three lines: who may see it (short), its cache header, its ``initial_state`` JSON.

    A client's initial state needs the first and last lines only: the header can be
    large (an anchor listing 20,000 children holds 20,000 references).
    """
    visibility = orjson.dumps(
        {
            "a": _encode_audience(record.audience),
            "h": [[k[0], k[1], sorted(a, key=repr)] for k, a in record.private_children.items()],
            "t": record.tstamp,
        }
    )
    header = orjson.dumps(
        {
            "o": record.owner,
            "r": record.refs,
            "p": sorted(record.parent_links, key=repr),
            "t": record.tstamp,
        }
    )
    return visibility + b"\n" + header + b"\n" + record.initial_state_bytes()


def _visibility(raw: bytes) -> tuple[Audience, dict[Key, frozenset[Any]], float]:
    found = orjson.loads(raw)
    hidden = {(t, pk): frozenset(a) for t, pk, a in found["h"]}
    return _decode_audience(found["a"]), hidden, found["t"]


def decode_record(raw: bytes) -> FlatRecord:
    visibility, header_raw, wire = raw.split(b"\n", 2)
    audience, hidden, _ = _visibility(visibility)
    header = orjson.loads(header_raw)
    data = orjson.loads(wire)
    for name in _WIRE_ONLY:
        data.pop(name, None)
    key = (data["_instance_type"], data["id"])
    return FlatRecord(
        key=key,
        data=data,
        owner=header["o"],
        refs=[(t, pk) for t, pk in header["r"]],
        tstamp=header["t"],
        parent_links=frozenset((t, pk) for t, pk in header["p"]),
        audience=audience,
        private_children=hidden,
        _initial=wire,
    )


class StoredRecord:
    """A cached record as a client's initial state needs it: who may see it and its
    encoded form, without the cache header; its fields are decoded only when its lists
    must be filtered for a viewer.

    ``ceiling`` caps the ``_tstamp`` it is sent with (see :meth:`capped`).
    """

    __slots__ = ("__dict__", "audience", "key", "private_children", "tstamp", "wire")

    def __init__(self, name: bytes, raw: bytes, ceiling: float | None = None) -> None:
        visibility, rest = raw.split(b"\n", 1)
        self.audience, self.private_children, self.tstamp = _visibility(visibility)
        self.wire = rest[rest.index(b"\n") + 1 :]
        self.key = field_key(name)
        if ceiling is not None and self.tstamp > ceiling:
            self.wire = _codec.encode_bytes({**orjson.loads(self.wire), "_tstamp": ceiling})
            self.tstamp = ceiling

    def initial_state_bytes(self) -> bytes:
        return self.wire

    @cached_property
    def data(self) -> dict[str, Any]:
        data = orjson.loads(self.wire)
        for name in _WIRE_ONLY:
            data.pop(name, None)
        return data


def encode_change(change: Change) -> bytes:
    audience = _encode_audience(change.audience)
    body = orjson.dumps([change.key[0], change.key[1], change.deleted, audience])
    return f"{change.tstamp!r}|".encode() + body


def decode_change(raw: bytes) -> Change:
    tstamp, body = raw.split(b"|", 1)
    instance_type, pk, deleted, audience = orjson.loads(body)
    return Change(float(tstamp), (instance_type, pk), deleted, _decode_audience(audience))


def _encode_audience(audience: Audience) -> list[Any] | None:
    return None if audience is None else sorted(audience, key=repr)


def _decode_audience(raw: Any) -> Audience:
    return None if raw is None else frozenset(raw)
