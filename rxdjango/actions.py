"""``@action``: make an ``async def`` method of a channel callable by its clients.

    class JobChannel(ContextChannel):
        @action
        async def rename(self, task_id: int, title: str) -> dict:
            ...

        @action(detached=True)
        async def export(self, since: datetime.date) -> str:
            ...

Clients call ``{"callId": 1, "action": "rename", "params": [7, "New"]}``. The
parameters are checked against the type hints and converted before the call;
the return value is encoded with the same encoder as instance records.

Ordinary actions of one connection run one at a time, in the order they were
called. A detached action runs as its own task, so later calls need not wait
for it. Calls in flight when the socket closes are cancelled.

Use ``channels.db.database_sync_to_async`` for ORM work inside an action;
changes committed there are broadcast like any other change, and reach the
caller before the action's reply.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from .exceptions import ActionNotAsync

__all__ = ["action"]

F = TypeVar("F", bound=Callable[..., Any])

ACTION_ATTRIBUTE = "_rx_action"


@dataclass(frozen=True)
class ActionOptions:
    detached: bool = False


@overload
def action(func: F) -> F: ...
@overload
def action(*, detached: bool = False) -> Callable[[F], F]: ...


def action(func: F | None = None, *, detached: bool = False) -> F | Callable[[F], F]:
    """Mark an ``async def`` channel method as callable by clients."""

    def decorate(target: F) -> F:
        if not inspect.iscoroutinefunction(target):
            raise ActionNotAsync(
                f"@action {getattr(target, '__qualname__', target)!s} must be an `async def` "
                "method; run ORM code in it with database_sync_to_async"
            )
        setattr(target, ACTION_ATTRIBUTE, ActionOptions(detached=detached))
        return target

    if func is not None:
        return decorate(func)
    return decorate
