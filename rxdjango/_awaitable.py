"""Results that a caller may use directly or ``await``.

Some channel methods do their work at once but are documented (by the original
RxDjango, by Channels) as coroutines: ``await MyChannel.revoke(...)`` must work
as well as a plain call. Such a method does its work and returns a
:class:`Done`, which awaits to its value without suspending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any

from channels.db import database_sync_to_async

__all__ = ["Done", "done_or_running"]


class Done:
    """A value already computed, that ``await`` also returns."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # a generator that finishes at once: awaiting never suspends

    def __bool__(self) -> bool:
        return bool(self.value)

    def __eq__(self, other: object) -> bool:
        return self.value == (other.value if isinstance(other, Done) else other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Done({self.value!r})"


_running: set[asyncio.Task[Any]] = set()


def done_or_running(work: Callable[[], Any]) -> Done | asyncio.Task[Any]:
    """Do ``work`` (synchronous, may use the ORM) in a way both call styles accept.

    Outside an event loop it runs now and the result is a :class:`Done`. On an event
    loop, where ORM code may not run, it starts at once in a worker thread and the
    result is its task: awaiting it gives the value and raises what ``work`` raised;
    a caller that does not await still gets the work done (a failure is then reported
    by asyncio as an exception never retrieved).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return Done(work())
    task = loop.create_task(database_sync_to_async(work)())
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task
