"""Encoding of everything the server sends, with one JSON encoder (orjson)."""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

__all__ = ["chunk_array", "decode", "encode", "encode_bytes", "join_array", "native"]


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        # DRF sends decimals as strings; keep that so no precision is lost.
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Mapping):  # e.g. a channel's read-only runtime_state
        return dict(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def encode_bytes(value: Any) -> bytes:
    """Encode ``value`` to JSON bytes (datetime, date, Decimal and UUID supported)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def encode(value: Any) -> str:
    """Encode ``value`` to a JSON text frame."""
    return encode_bytes(value).decode()


def decode(text: str | bytes) -> Any:
    """Decode a JSON frame; raises ``ValueError`` on invalid JSON."""
    return orjson.loads(text)


_PLAIN = (str, int, float, bool, type(None))


def native(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every value in its JSON form (what a client would decode).

    Cached records are compared with fresh ones to find changed fields; holding
    both in JSON form makes that comparison exact whether the cache lives in
    this process or in Redis (where a tuple comes back as a list, a datetime as
    a string).
    """
    if all(isinstance(value, _PLAIN) for value in record.values()):
        return record
    return orjson.loads(encode_bytes(record))


def join_array(encoded_items: Iterable[bytes]) -> str:
    """Join already-encoded JSON values into one JSON array text frame."""
    return (b"[" + b",".join(encoded_items) + b"]").decode()


def chunk_array(encoded_items: Iterable[bytes], max_bytes: int) -> Iterator[str]:
    """Group encoded items into array frames of at most about ``max_bytes`` each.

    An item larger than ``max_bytes`` travels alone in its own frame.
    """
    batch: list[bytes] = []
    size = 2
    for item in encoded_items:
        if batch and size + len(item) + 1 > max_bytes:
            yield join_array(batch)
            batch, size = [], 2
        batch.append(item)
        size += len(item) + 1
    if batch:
        yield join_array(batch)
