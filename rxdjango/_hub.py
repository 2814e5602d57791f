"""Local fan-out: deliver an encoded frame to every connection of an anchor.

A frame is encoded once per anchor (once per owner for private records) and
the same string is handed to every subscribed connection, so the cost of a
change does not include one serialization per client.

``publish`` may be called from any thread. Delivery happens on each
subscriber's event loop, in publish order (``call_soon_threadsafe`` is FIFO).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any, Protocol

__all__ = ["Hub", "Subscriber", "hub"]

#: (channel id, anchor pk)
Topic = tuple[str, Hashable]


class Subscriber(Protocol):
    """A connection as the hub sees it."""

    user_id: Any
    loop: asyncio.AbstractEventLoop

    def deliver(self, anchor: Any, frame: str) -> None:
        """Called on ``loop``; must not block."""


class Hub:
    """Subscriptions of this process's connections, by topic and by user."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # topic -> user id -> subscribers
        self._topics: dict[Topic, dict[Any, set[Subscriber]]] = {}

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

    def publish(self, topic: Topic, frame: str, owner: Any = None) -> int:
        """Deliver ``frame`` to the topic's subscribers (only ``owner``'s, if given).

        Returns the number of subscribers it was handed to.
        """
        with self._lock:
            users = self._topics.get(topic)
            if not users:
                return 0
            if owner is None:
                targets = [s for subscribers in users.values() for s in subscribers]
            else:
                targets = list(users.get(owner, ()))
        _deliver_on_loops(targets, topic[1], frame)
        return len(targets)


def _deliver_on_loops(targets: list[Subscriber], anchor: Any, frame: str) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Subscriber]] = {}
    for subscriber in targets:
        by_loop.setdefault(subscriber.loop, []).append(subscriber)
    for loop, subscribers in by_loop.items():
        # Always through the loop's queue, even from the loop's own thread, so
        # frames keep publish order.
        if not loop.is_closed():
            loop.call_soon_threadsafe(_deliver, subscribers, anchor, frame)


def _deliver(subscribers: list[Subscriber], anchor: Any, frame: str) -> None:
    for subscriber in subscribers:
        subscriber.deliver(anchor, frame)


hub = Hub()
