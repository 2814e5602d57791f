"""Calling user-written hooks that may be plain functions or coroutines."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ._db_threads import in_db_thread

__all__ = ["call_hook"]


async def call_hook(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await a coroutine function; run a plain function on a database thread."""
    if inspect.iscoroutinefunction(func):
        return await func(*args, **kwargs)
    result = await in_db_thread(functools.partial(func, *args, **kwargs))
    if inspect.isawaitable(result):
        result = await result
    return result
