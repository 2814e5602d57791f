"""Fan-out between processes over Redis pub/sub.

A change is published once per anchor (once per owner for private records)
on ``<prefix>:pub:<channel id>``, whatever the number of clients; every
process runs one :class:`Listener` subscribed to all channels and hands each
message to its local :class:`~rxdjango._hub.Hub`, which delivers the same
frame string to every local connection of that anchor.

Pub/sub delivers nothing that was published while a subscriber was
disconnected, so after a lost connection the listener closes every local
connection with 4408: clients reconnect with ``lastUpdate`` and catch up from
the anchor's history (or resync), and nothing is lost silently.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson
import redis
from redis.client import PubSub
from redis.exceptions import RedisError

from .. import _events, _telemetry
from .._change import Retained
from .._hub import Hub, Target
from .._protocol import Envelope
from .redis_store import Keys

__all__ = ["Listener", "decode_envelope", "envelope"]

logger = logging.getLogger("rxdjango")

#: Seconds between attempts to reach Redis again, doubling up to the cap.
RECONNECT_DELAY = 0.1
RECONNECT_DELAY_CAP = 2.0


def envelope(
    kind: str,
    anchor: Any,
    payload: str | bytes,
    *,
    target: Target | None = None,
    r: Retained | None = None,
) -> bytes:
    """One pub/sub message: a JSON header line, then the frame as sent to clients.

    ``target`` travels as ``o`` (only these users) and ``x`` (except these users).
    """
    header: dict[str, Any] = {"k": kind, "a": anchor}
    if target is not None:
        only, exclude = target
        if only is not None:
            header["o"] = sorted(only, key=repr)
        if exclude:
            header["x"] = sorted(exclude, key=repr)
    if r:
        header["r"] = [[key[0], key[1], list(holders)] for key, holders in r.items()]
    body = payload.encode() if isinstance(payload, str) else payload
    return orjson.dumps(header) + b"\n" + body


def decode_envelope(raw: bytes) -> tuple[dict[str, Any], str]:
    header, body = raw.split(b"\n", 1)
    return orjson.loads(header), body.decode()


class Listener:
    """A thread that receives every channel's messages and feeds the local hub."""

    def __init__(
        self,
        connect: Callable[[], redis.Redis],
        keys: Keys,
        hub: Hub,
        on_control: Callable[[dict[str, Any], str], None],
        on_disconnect: Callable[[], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self.connect = connect
        self.keys = keys
        self.hub = hub
        self.on_control = on_control
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.ready = threading.Event()
        self._stopped = threading.Event()
        self._connected_once = False
        self._thread = threading.Thread(
            target=self._run, name="rxdjango-redis-listener", daemon=True
        )
        self._pub_prefix = keys.pub("")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a wake-up message ends its wait for the next message."""
        self._stopped.set()
        if self._thread.is_alive():
            with contextlib.suppress(RedisError, OSError):
                client = self.connect()
                client.publish(self.keys.control, envelope(Envelope.WAKE, None, ""))
                client.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = RECONNECT_DELAY
        while not self._stopped.is_set():
            try:
                self._listen()
            except (RedisError, OSError, ValueError) as error:
                if self._stopped.is_set():
                    return
                _telemetry.redis_errors.inc()
                if self.ready.is_set():
                    self.ready.clear()
                    self.on_disconnect()
                if self._connected_once:
                    _events.emit("redis_lost", logging.WARNING, error=type(error).__name__)
                self._stopped.wait(delay)
                delay = min(delay * 2, RECONNECT_DELAY_CAP)
                continue
            delay = RECONNECT_DELAY

    def _listen(self) -> None:
        client = self.connect()
        pubsub = _Subscription(client.connection_pool)
        try:
            pubsub.psubscribe(self.keys.pub_pattern)
            pubsub.subscribe(self.keys.control)
            confirmed = 0
            while confirmed < 2 and not self._stopped.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] in ("subscribe", "psubscribe"):
                    confirmed += 1
            if self._stopped.is_set():
                return
            if self._connected_once:
                self.on_reconnect()
            self._connected_once = True
            self.ready.set()
            connects = pubsub.connects
            while not self._stopped.is_set():
                message = pubsub.get_message(timeout=1.0)
                if pubsub.connects != connects:
                    # redis-py reconnected and resubscribed by itself (its retry policy):
                    # what was published meanwhile is lost all the same.
                    connects = pubsub.connects
                    self.on_disconnect()
                    self.on_reconnect()
                if message is not None and message["type"] in ("message", "pmessage"):
                    self._handle(message["channel"].decode(), message["data"])
        finally:
            pubsub.close()
            client.close()

    def _handle(self, channel: str, raw: bytes) -> None:
        try:
            header, payload = decode_envelope(raw)
        except (ValueError, orjson.JSONDecodeError):
            logger.error("rxdjango: ignored a malformed message on %s", channel)
            return
        if channel == self.keys.control:
            if header.get("k") != Envelope.WAKE:
                self.on_control(header, payload)
            return
        channel_id = channel[len(self._pub_prefix) :]
        topic = (channel_id, header.get("a"))
        kind = header.get("k")
        if kind == Envelope.FRAME:
            retained = {(t, pk): frozenset(holders) for t, pk, holders in header.get("r", ())}
            self.hub.publish(topic, payload, _target(header), retained or None)
        elif kind == Envelope.GONE:
            self.hub.anchor_gone(topic)
        elif kind == Envelope.CLOSE:
            self.hub.close_topic(topic, int(payload))
        elif kind == Envelope.OFFER:
            self.hub.offer(channel_id, orjson.loads(payload))


class _Subscription(PubSub):
    """A pub/sub connection that counts its (re)connections."""

    connects = 0

    def on_connect(self, connection: Any) -> None:
        self.connects += 1
        super().on_connect(connection)


def _target(header: dict[str, Any]) -> Target | None:
    only, exclude = header.get("o"), header.get("x")
    if only is None and not exclude:
        return None
    return (None if only is None else frozenset(only), frozenset(exclude or ()))
