"""Run a coroutine at once, up to the point where it first waits.

A fan-out hands one frame to thousands of sockets in one pass of the event loop. If
each socket's send ran on a task woken for it, every socket would allocate a wake-up
(a future, a handle) that lives until the next pass: thousands of objects that the
garbage collector promotes and then scans again and again, which showed as full
collections of up to 2 s at 10,000 clients. The server's send almost never waits
(it waits only while the peer's socket buffer is full), so it is started here, in
the caller's pass: when it completes, nothing outlives it; when it does wait, the
rest is returned as an awaitable for a task to finish.

This is what ``asyncio.eager_task_factory`` does from Python 3.12, without a task
object per send, and on 3.11.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["Remainder", "start"]


class Remainder:
    """The rest of a coroutine that waited: awaiting it resumes and finishes it."""

    __slots__ = ("_coroutine", "_waiting_on")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coroutine = coroutine
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, None]:
        waiting_on = self._waiting_on
        while True:
            try:
                # The awaiting task waits on what the coroutine yielded, as if it had
                # awaited the coroutine from its start.
                yield waiting_on
            except BaseException as error:  # the task was cancelled: pass it in
                try:
                    waiting_on = self._coroutine.throw(error)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = self._coroutine.send(None)
                except StopIteration:
                    return


def start(coroutine: Coroutine[Any, Any, Any]) -> Remainder | None:
    """Run ``coroutine`` until it completes (None) or first waits (its remainder).

    Its result is dropped; what it raises before it first waits is raised here.
    """
    try:
        waiting_on = coroutine.send(None)
    except StopIteration:
        return None
    return Remainder(coroutine, waiting_on)
