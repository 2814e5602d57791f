"""Fan-out between processes over Redis pub/sub.

A change is published once per anchor (once per owner for private records)
on ``<prefix>:pub:<channel id>``, whatever the number of clients; every
process runs one :class:`Listener` subscribed to all channels and hands each
message to its local :class:`~rxdjango._hub.Hub`, which delivers the same
frame string to every local connection of that anchor. On a Redis Cluster the
channels are sharded (``SPUBLISH``/``SSUBSCRIBE``): each lives on the shard that
serves its slot, and a message is not copied to every node.

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
from redis.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from .. import _events, _telemetry
from .._change import Retained
from .._hub import Hub, Target
from .._protocol import Envelope
from .redis_keys import Keys

__all__ = ["Listener", "decode_envelope", "envelope"]

logger = logging.getLogger("rxdjango")

_CONFIRMATIONS = ("subscribe", "psubscribe", "ssubscribe")
_MESSAGES = ("message", "pmessage", "smessage")

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
    """Threads that receive every channel's messages and feed the local hub.

    On one server, one thread: a pattern subscription to every channel plus the control
    channel. On a cluster, sharded pub/sub has no patterns: one thread per channel
    (every registered channel and the control channel), each subscribed on the node
    serving the channel's slot, found again after a failover.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        keys: Keys,
        hub: Hub,
        on_control: Callable[[dict[str, Any], str], None],
        on_disconnect: Callable[[], None],
        on_reconnect: Callable[[], None],
        shard_channels: Callable[[], list[str]] | None = None,
    ) -> None:
        self.connect = connect
        self.keys = keys
        self.hub = hub
        self.on_control = on_control
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        #: the cluster's channels, known once the listener starts (None: one server)
        self.shard_channels = shard_channels
        #: set while every feed is subscribed
        self.ready = threading.Event()
        self._stopped = threading.Event()
        self._subscribed: set[str | None] = set()
        self._joined_once: set[str | None] = set()
        self._feeds: list[str | None] = []
        self._state = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._cluster: Any = None
        self._pub_prefix = keys.pub("")

    def start(self) -> None:
        if self.shard_channels is None:
            self._feeds = [None]
        else:
            self._feeds = [self.keys.control, *self.shard_channels()]
        for feed in self._feeds:
            thread = threading.Thread(
                target=self._run, args=(feed,), name="rxdjango-redis-listener", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop the threads; a wake-up message ends each one's wait for the next message."""
        self._stopped.set()
        if any(thread.is_alive() for thread in self._threads):
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                client = self._cluster or self.connect()
                command = "PUBLISH" if self.shard_channels is None else "SPUBLISH"
                for feed in self._feeds:
                    client.execute_command(
                        command, feed or self.keys.control, envelope(Envelope.WAKE, None, "")
                    )
                client.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _run(self, feed: str | None) -> None:
        delay = RECONNECT_DELAY
        failed = False
        while not self._stopped.is_set():
            try:
                self._listen(feed, failed)
            except (RedisError, RedisClusterException, OSError, ValueError) as error:
                if self._stopped.is_set():
                    return
                _telemetry.redis_errors.inc()
                self._lost(feed)
                if feed in self._joined_once:
                    _events.emit("redis_lost", logging.WARNING, error=type(error).__name__)
                failed = True
                self._stopped.wait(delay)
                delay = min(delay * 2, RECONNECT_DELAY_CAP)
                continue
            delay = RECONNECT_DELAY

    def _open(self, feed: str | None, failed: bool) -> tuple[_Subscription, Any]:
        """A subscription for ``feed``, and the client to close after it (if any)."""
        if feed is None:
            client = self.connect()
            pubsub = _Subscription(client.connection_pool)
            pubsub.psubscribe(self.keys.pub_pattern)
            pubsub.subscribe(self.keys.control)
            return pubsub, client
        with self._state:  # one cluster client for the feeds, made when first reachable
            if self._cluster is None:
                self._cluster = self.connect()
            elif failed:  # the node may be gone: learn the slots again
                self._cluster.nodes_manager.initialize()
        node = self._cluster.get_node_from_key(feed)
        pubsub = _Subscription(node.redis_connection.connection_pool)
        pubsub.ssubscribe(feed)
        return pubsub, None

    def _listen(self, feed: str | None, failed: bool) -> None:
        pubsub, client = self._open(feed, failed)
        try:
            expected = 2 if feed is None else 1
            confirmed = 0
            while confirmed < expected and not self._stopped.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] in _CONFIRMATIONS:
                    confirmed += 1
            if self._stopped.is_set():
                return
            if feed in self._joined_once:
                self.on_reconnect()
            self._joined(feed)
            connects = pubsub.connects
            while not self._stopped.is_set():
                message = pubsub.get_message(timeout=1.0)
                if pubsub.connects != connects:
                    # redis-py reconnected and resubscribed by itself (its retry policy):
                    # what was published meanwhile is lost all the same.
                    connects = pubsub.connects
                    self.on_disconnect()
                    self.on_reconnect()
                if message is None:
                    continue
                if message["type"] in _MESSAGES:
                    self._handle(message["channel"].decode(), message["data"])
                elif message["type"] == "sunsubscribe":
                    # The slot moved to another node (or this one stopped serving it).
                    raise RedisConnectionError(f"unsubscribed from {feed} by the cluster")
        finally:
            pubsub.close()
            if client is not None:
                client.close()

    def _joined(self, feed: str | None) -> None:
        with self._state:
            self._subscribed.add(feed)
            self._joined_once.add(feed)
            if len(self._subscribed) == len(self._feeds):
                self.ready.set()

    def _lost(self, feed: str | None) -> None:
        with self._state:
            was_subscribed = feed in self._subscribed
            self._subscribed.discard(feed)
            self.ready.clear()
        if was_subscribed:
            self.on_disconnect()

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
