"""Local fan-out: deliver frames and events to this process's connections.

A frame is encoded once per anchor (once per owner for private records) and
the same string is handed to every subscribed connection, so the cost of a
change does not include one serialization per client.

Every method may be called from any thread. Delivery happens on each
connection's event loop, in call order (``call_soon_threadsafe`` is FIFO), so
a connection sees frames and events in the order they were published.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

__all__ = ["Hub", "Retained", "Subscriber", "Topic", "hub"]

#: (channel id, anchor pk)
Topic = tuple[str, Hashable]
#: (instance type, pk) of a deleted record → pks of the other anchors still holding it
Retained = dict[tuple[str, Any], frozenset[Any]]


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

    def count(self, topic: Topic) -> int:
        with self._lock:
            return sum(len(s) for s in self._topics.get(topic, {}).values())

    def connection_count(self, channel_id: str) -> int:
        with self._lock:
            return len(self._channels.get(channel_id, ()))

    # -- delivery -------------------------------------------------------------------

    def publish(
        self, topic: Topic, frame: str, owner: Any = None, retained: Retained | None = None
    ) -> int:
        """Deliver ``frame`` to the topic's subscribers (only ``owner``'s, if given).

        Returns the number of connections it was handed to.
        """
        targets = self._subscribers(topic, owner)
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

    def offer(self, channel_id: str, anchors: list[Any]) -> None:
        with self._lock:
            targets = list(self._channels.get(channel_id, ()))
        _schedule(targets, lambda s: s.offer_anchors(list(anchors)))

    def _subscribers(self, topic: Topic, owner: Any) -> list[Subscriber]:
        with self._lock:
            users = self._topics.get(topic)
            if not users:
                return []
            if owner is None:
                return [s for subscribers in users.values() for s in subscribers]
            return list(users.get(owner, ()))


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
