"""Pure pieces: the JSON encoder, frame chunking, replies (rendering: test_rendering)."""

from __future__ import annotations

import datetime
import decimal
import uuid

import orjson
import pytest

from rxdjango import _codec
from rxdjango._protocol import Status, auth_reply


def test_encoder_handles_the_types_drf_and_actions_produce():
    value = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 1, 2),
        "time": datetime.time(3, 4),
        "price": decimal.Decimal("10.10"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "tags": {"a"},
        "pair": (1, 2),
    }
    assert orjson.loads(_codec.encode(value)) == {
        "when": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "time": "03:04:00",
        "price": "10.10",
        "id": "12345678-1234-5678-1234-567812345678",
        "tags": ["a"],
        "pair": [1, 2],
    }
    with pytest.raises(TypeError):
        _codec.encode({"x": object()})


def test_chunking_keeps_every_item_and_respects_the_size():
    items = [_codec.encode_bytes({"i": i, "pad": "x" * 20}) for i in range(50)]
    frames = list(_codec.chunk_array(items, 200))
    assert len(frames) > 5
    assert all(len(f) <= 200 for f in frames)
    decoded = [record for frame in frames for record in orjson.loads(frame)]
    assert [r["i"] for r in decoded] == list(range(50))
    big = _codec.encode_bytes({"pad": "y" * 500})
    assert [orjson.loads(f) for f in _codec.chunk_array([big], 200)] == [[{"pad": "y" * 500}]]


def test_auth_replies():
    assert auth_reply(Status.OK) == {"type": "auth", "statusCode": 200}
    assert auth_reply(Status.TIMEOUT)["error"] == "error/auth-timeout"
