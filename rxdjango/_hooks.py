"""Calling user-written hooks that may be plain functions or coroutines."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

__all__ = ["call_hook"]


async def call_hook(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await a coroutine function; run a plain function in the ORM-safe thread."""
    if inspect.iscoroutinefunction(func):
        return await func(*args, **kwargs)
    result = await database_sync_to_async(func)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result
