"""Message kinds, status and close codes of the wire protocol, in one place.

Every kind a browser sends or receives is named here (a test pins these tables
against the TypeScript client's ``protocol.ts``), and so is every kind of message
that server processes exchange over Redis.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "NOTIFICATION_TYPE",
    "CloseCode",
    "Envelope",
    "Operation",
    "Reply",
    "Request",
    "Status",
    "auth_reply",
    "client_value",
    "delete_record",
    "end_marker",
    "error_frame",
]


class Operation(StrEnum):
    """Values of ``_operation`` in instance records."""

    INITIAL_STATE = "initial_state"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    END_INITIAL_STATE = "end_initial_state"


class Reply(StrEnum):
    """Values of ``type`` in server control messages."""

    AUTH = "auth"
    INITIAL_ANCHORS = "initialAnchors"
    PREPEND_ANCHOR = "prependAnchor"
    APPEND_ANCHOR = "appendAnchor"  # [ext]
    RESYNC = "resync"
    ERROR = "error"
    RUNTIME_VAR = "runtimeVar"
    SYSTEM = "system"
    MAINTENANCE = "maintenance"
    ACTION_RESPONSE = "actionResponse"
    WRITE_RESPONSE = "writeResponse"


class Request(StrEnum):
    """Values of ``type`` in client frames (an action call may also be recognised by
    its ``action`` key alone, as the original clients send it)."""

    ACTION = "action"
    WRITE = "write"


#: ``_instance_type`` of a notification record (``broadcast_notification``).
NOTIFICATION_TYPE = "_notification"


class Envelope(StrEnum):
    """Kinds of the messages server processes publish to each other over Redis."""

    #: frames for an anchor's clients (header: target users, retained records)
    FRAME = "frame"
    #: the anchor's row was deleted: its clients drop it
    GONE = "gone"
    #: close the anchor's clients with the code in the payload
    CLOSE = "close"
    #: new anchor rows, for list channels with ``auto_update``
    OFFER = "offer"
    #: a frame for every client of every channel (system messages)
    ALL = "all"
    #: close a user's sockets (of a channel, of an anchor)
    REVOKE = "revoke"
    #: a new cache epoch: every process drops what it knew of the old one
    EPOCH = "epoch"
    #: wakes a process's own listener (it is stopping)
    WAKE = "wake"


class Status(IntEnum):
    OK = 200
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    TIMEOUT = 408
    TOO_MANY_REQUESTS = 429
    SERVER_ERROR = 500
    UNAVAILABLE = 503  # the process is shutting down: try again on another


class CloseCode(IntEnum):
    """WebSocket close codes: 4000 + the HTTP-like status."""

    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    TIMEOUT = 4408
    TOO_MANY_REQUESTS = 4429
    #: The standard "service restart" code: reconnect at once (to another process).
    RESTARTING = 1012


AUTH_ERRORS: dict[Status, str] = {
    Status.BAD_REQUEST: "error/missing-token",
    Status.UNAUTHORIZED: "error/unauthorized",
    Status.FORBIDDEN: "error/forbidden",
    Status.NOT_FOUND: "error/not-found",
    Status.TIMEOUT: "error/auth-timeout",
    Status.TOO_MANY_REQUESTS: "error/too-many-connections",
}


def auth_reply(status: Status) -> dict[str, Any]:
    reply: dict[str, Any] = {"type": Reply.AUTH, "statusCode": int(status)}
    if status in AUTH_ERRORS:
        reply["error"] = AUTH_ERRORS[status]
    return reply


def error_frame(message: str, code: int = Status.BAD_REQUEST) -> dict[str, Any]:
    return {"type": Reply.ERROR, "error": {"code": int(code), "message": message}}


def delete_record(instance_type: str, pk: Any, tstamp: float) -> dict[str, Any]:
    """The wire record announcing that ``(instance_type, pk)`` is gone for this client."""
    return {
        "id": pk,
        "_instance_type": instance_type,
        "_tstamp": tstamp,
        "_operation": Operation.DELETE,
        "_deleted": True,
    }


def end_marker(tstamp: float) -> dict[str, Any]:
    return {
        "_instance_type": "",
        "_tstamp": tstamp,
        "_operation": Operation.END_INITIAL_STATE,
        "id": 0,
    }


def client_value(value: Any, limit: int = 64) -> str:
    """A value a client sent, as an error message may quote it.

    Short strings and numbers are quoted; anything else is named by its JSON type
    (an array or object may be huge or nested too deep to print).
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"(a string of {len(value)} characters)"
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, list):
        return "(an array)"
    if isinstance(value, dict):
        return "(an object)"
    return f"({type(value).__name__})"
