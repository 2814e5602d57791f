"""Results that a caller may use directly or ``await``.

Some channel methods do their work at once but are documented (by the original
RxDjango, by Channels) as coroutines: ``await MyChannel.revoke(...)`` must work
as well as a plain call. Such a method does its work and returns a
:class:`Done`, which awaits to its value without suspending.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

__all__ = ["Done"]


class Done:
    """A value already computed, that ``await`` also returns."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # a generator that finishes at once: awaiting never suspends

    def __repr__(self) -> str:
        return f"Done({self.value!r})"
