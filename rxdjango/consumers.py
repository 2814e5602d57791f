"""``@consumer``: handle channel-layer events sent to a group the channel joined.

    class JobChannel(ContextChannel):
        async def on_connect(self, tstamp):
            await self.group_add(f"job-{self.kwargs['job_id']}")

        @consumer("job.announcement")
        async def announce(self, event):
            await self.send({"type": "announcement", "text": event["text"]})

    # anywhere: async_to_sync(get_channel_layer().group_send)(
    #     "job-42", {"type": "job.announcement", "text": "Lunch!"})

Events are routed by their ``type`` through a registry built when the class is
created, so several channels and several methods may handle the same type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .exceptions import ChannelDeclarationError

__all__ = ["consumer"]

F = TypeVar("F", bound=Callable[..., Any])

CONSUMER_ATTRIBUTE = "_rx_consumer"


def consumer(event_type: str) -> Callable[[F], F]:
    """Call the decorated ``async def`` method with every event of ``event_type``."""
    if not isinstance(event_type, str) or not event_type or event_type.startswith("websocket."):
        raise ChannelDeclarationError(
            f"@consumer needs an event type such as 'job.updated', got {event_type!r}"
        )

    def decorate(func: F) -> F:
        if not inspect.iscoroutinefunction(func):
            raise ChannelDeclarationError(
                f"@consumer({event_type!r}) {getattr(func, '__qualname__', func)!s} must be "
                "an `async def` method"
            )
        types_ = getattr(func, CONSUMER_ATTRIBUTE, ())
        setattr(func, CONSUMER_ATTRIBUTE, (*types_, event_type))
        return func

    return decorate
