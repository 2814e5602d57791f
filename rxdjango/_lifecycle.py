"""The lifecycle of a client connection, and the moves it allows."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALLOWED", "ENDING", "Lifecycle"]


class Lifecycle(StrEnum):
    AWAITING_AUTH = "awaiting_auth"
    STARTING = "starting"
    LIVE = "live"
    CLOSING = "closing"
    CLOSED = "closed"


ALLOWED: dict[Lifecycle, set[Lifecycle]] = {
    Lifecycle.AWAITING_AUTH: {Lifecycle.STARTING, Lifecycle.CLOSING, Lifecycle.CLOSED},
    Lifecycle.STARTING: {Lifecycle.LIVE, Lifecycle.CLOSING, Lifecycle.CLOSED},
    Lifecycle.LIVE: {Lifecycle.CLOSING, Lifecycle.CLOSED},
    Lifecycle.CLOSING: {Lifecycle.CLOSED},
    Lifecycle.CLOSED: set(),
}

#: The connection is going away: nothing more is queued for it.
ENDING = frozenset({Lifecycle.CLOSING, Lifecycle.CLOSED})
