"""Local fan-out: deliver frames and events to this process's connections.

A frame is encoded once per anchor (and once per user an audience of private
records names) and the same string is handed to every subscribed connection
it targets, so the cost of a change does not include one serialization per
client.

Every method may be called from any thread. Delivery happens on each
connection's event loop, in call order (``call_soon_threadsafe`` is FIFO), so
a connection sees frames and events in the order they were published.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from . import _telemetry

__all__ = ["Hub", "Retained", "Subscriber", "Target", "Topic", "hub"]

#: (channel id, anchor pk)
Topic = tuple[str, Hashable]
#: (instance type, pk) of a deleted record → pks of the other anchors still holding it
Retained = dict[tuple[str, Any], frozenset[Any]]
#: Who receives a frame: (only these users, or None for every user; except these users)
Target = tuple[frozenset[Any] | None, frozenset[Any]]


#: Seconds a revocation of all of a user's sockets is remembered (admissions in flight).
REVOCATION_MEMORY = 300.0


def only_user(user_id: Any) -> Target:
    return (frozenset((user_id,)), frozenset())


class Subscriber(Protocol):
    """A connection as the hub sees it. Every callback runs on ``loop``."""

    user_id: Any
    loop: asyncio.AbstractEventLoop

    def deliver(self, anchor: Any, frame: str, retained: Retained | None = None) -> None:
        """A frame for one of the connection's anchors; must not block.

        ``retained`` maps the key of a delete record in ``frame`` to the other
        anchors that still hold that record: a connection holding one of them
        must not pass that delete on.
        """

    def deliver_any(self, frame: str) -> None:
        """A frame for the whole connection (system messages)."""

    def anchor_deleted(self, anchor: Any) -> None:
        """The anchor row is gone; its delete record was delivered just before."""

    def offer_anchors(self, anchors: list[Any]) -> None:
        """New anchor instances were committed (list channels with auto_update)."""

    def close_soon(self, code: int) -> None:
        """Close after the frames already queued (the client reconnects)."""


class Hub:
    """Subscriptions of this process's connections: by topic and user, by channel, all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[Topic, dict[Any, set[Subscriber]]] = {}
        self._channels: dict[str, set[Subscriber]] = {}
        #: user id -> monotonic time of the last revocation of all their sockets, so a
        #: connection admitted while it was on its way can still be refused.
        self._revoked: dict[Any, float] = {}
        #: user id -> admitted connections of this process (RX_MAX_CONNECTIONS_PER_USER)
        self._admitted: dict[Any, int] = {}

    # -- registration -------------------------------------------------------------

    def register(self, channel_id: str, subscriber: Subscriber) -> None:
        with self._lock:
            self._channels.setdefault(channel_id, set()).add(subscriber)

    def unregister(self, channel_id: str, subscriber: Subscriber) -> None:
        with self._lock:
            connections = self._channels.get(channel_id)
            if connections is not None:
                connections.discard(subscriber)
                if not connections:
                    del self._channels[channel_id]

    def subscribe(self, topic: Topic, subscriber: Subscriber) -> None:
        with self._lock:
            if topic not in self._topics:
                _telemetry.anchors_watched.inc()
            users = self._topics.setdefault(topic, {})
            users.setdefault(subscriber.user_id, set()).add(subscriber)

    def unsubscribe(self, topic: Topic, subscriber: Subscriber) -> None:
        with self._lock:
            users = self._topics.get(topic)
            if users is None:
                return
            subscribers = users.get(subscriber.user_id)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del users[subscriber.user_id]
            if not users:
                del self._topics[topic]
                _telemetry.anchors_watched.dec()

    def count(self, topic: Topic) -> int:
        with self._lock:
            return sum(len(s) for s in self._topics.get(topic, {}).values())

    def connection_count(self, channel_id: str) -> int:
        with self._lock:
            return len(self._channels.get(channel_id, ()))

    # -- delivery -------------------------------------------------------------------

    def publish(
        self,
        topic: Topic,
        frame: str,
        target: Target | None = None,
        retained: Retained | None = None,
    ) -> int:
        """Deliver ``frame`` to the topic's subscribers that ``target`` names (every one
        if None). Returns the number of connections it was handed to.
        """
        targets = self._subscribers(topic, target)
        anchor = topic[1]
        _schedule(targets, lambda s: s.deliver(anchor, frame, retained or None))
        return len(targets)

    def publish_all(self, frame: str) -> int:
        """Deliver ``frame`` to every registered connection of every channel."""
        with self._lock:
            targets = {s for connections in self._channels.values() for s in connections}
        _schedule(targets, lambda s: s.deliver_any(frame))
        return len(targets)

    def anchor_gone(self, topic: Topic) -> None:
        anchor = topic[1]
        _schedule(self._subscribers(topic, None), lambda s: s.anchor_deleted(anchor))

    def close_topic(self, topic: Topic, code: int) -> int:
        """Close every connection watching ``topic``; returns how many."""
        targets = self._subscribers(topic, None)
        _schedule(targets, lambda s: s.close_soon(code))
        return len(targets)

    def connections(self) -> set[Subscriber]:
        """Every connection of this process (registered or subscribed)."""
        with self._lock:
            found = {s for connections in self._channels.values() for s in connections}
            for users in self._topics.values():
                for subscribers in users.values():
                    found.update(subscribers)
        return found

    def close_all(self, code: int, only: set[Subscriber] | None = None) -> int:
        """Close every connection of this process (or those of ``only`` still open)."""
        targets = self.connections()
        if only is not None:
            targets &= only
        _schedule(targets, lambda s: s.close_soon(code))
        return len(targets)

    def close_user(
        self, user_id: Any, code: int, channel_id: str | None = None, anchor: Any = None
    ) -> int:
        """Close the user's connections (of one channel, of one of its anchors); returns
        how many. A revocation of every socket is remembered for :meth:`revoked_since`."""
        with self._lock:
            if channel_id is None:
                self._revoked[user_id] = time.monotonic()
                self._forget_old_revocations()
                pools: list[set[Subscriber]] = list(self._channels.values())
                pools.extend(s for users in self._topics.values() for s in users.values())
            elif anchor is None:
                pools = [self._channels.get(channel_id, set())]
                pools.extend(
                    users.get(user_id, set())
                    for topic, users in self._topics.items()
                    if topic[0] == channel_id
                )
            else:
                pools = [self._topics.get((channel_id, anchor), {}).get(user_id, set())]
            targets = {s for pool in pools for s in pool if s.user_id == user_id}
        _schedule(targets, lambda s: s.close_soon(code))
        return len(targets)

    def admit_user(self, user_id: Any, limit: int | None) -> bool:
        """Count one more connection of ``user_id``; False (nothing counted) at ``limit``."""
        with self._lock:
            admitted = self._admitted.get(user_id, 0)
            if limit is not None and admitted >= limit:
                return False
            self._admitted[user_id] = admitted + 1
            return True

    def release_user(self, user_id: Any) -> None:
        with self._lock:
            admitted = self._admitted.get(user_id, 0) - 1
            if admitted > 0:
                self._admitted[user_id] = admitted
            else:
                self._admitted.pop(user_id, None)

    def revoked_since(self, user_id: Any, moment: float) -> bool:
        """Whether every socket of ``user_id`` was revoked at or after ``moment``
        (monotonic seconds of this process)."""
        with self._lock:
            return self._revoked.get(user_id, float("-inf")) >= moment

    def _forget_old_revocations(self) -> None:
        """Admissions take seconds, not minutes: older revocations need no memory."""
        horizon = time.monotonic() - REVOCATION_MEMORY
        for user_id in [u for u, at in self._revoked.items() if at < horizon]:
            del self._revoked[user_id]

    def offer(self, channel_id: str, anchors: list[Any]) -> None:
        with self._lock:
            targets = list(self._channels.get(channel_id, ()))
        _schedule(targets, lambda s: s.offer_anchors(list(anchors)))

    def _subscribers(self, topic: Topic, target: Target | None) -> list[Subscriber]:
        with self._lock:
            users = self._topics.get(topic)
            if not users:
                return []
            if target is None:
                return [s for subscribers in users.values() for s in subscribers]
            only, exclude = target
            if only is not None:
                return [s for user in only - exclude for s in users.get(user, ())]
            return [s for user, found in users.items() if user not in exclude for s in found]


def _schedule(targets: Iterable[Subscriber], callback: Callable[[Subscriber], None]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Subscriber]] = {}
    for subscriber in targets:
        by_loop.setdefault(subscriber.loop, []).append(subscriber)
    for loop, subscribers in by_loop.items():
        # Always through the loop's queue, even from the loop's own thread, so
        # everything keeps publish order; in a fresh context, so what the callback
        # starts does not inherit the publisher's (e.g. asgiref's "inside a sync call").
        if not loop.is_closed():
            loop.call_soon_threadsafe(
                _run_all, subscribers, callback, context=contextvars.Context()
            )


def _run_all(subscribers: list[Subscriber], callback: Callable[[Subscriber], None]) -> None:
    for subscriber in subscribers:
        callback(subscriber)


hub = Hub()
