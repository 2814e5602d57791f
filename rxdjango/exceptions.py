"""Exceptions raised by RxDjango, and the ones a project raises to answer a client.

Every error has a stable machine ``code`` (the one that travels on the wire
where it reaches a client) beside a human message that names the fix.

The names a project written for the original RxDjango catches or raises are
here too (``UnauthorizedError``, ``ForbiddenError``, ``AnchorDoesNotExist``,
``WriteError``, ``UnknownProperty``, ``ActionNotAsync``, ``RxDjangoBug``).
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "ActionNotAsync",
    "AnchorDoesNotExist",
    "ChannelDeclarationError",
    "ClientError",
    "ForbiddenError",
    "RxDjangoBug",
    "RxDjangoError",
    "UnauthorizedError",
    "UnknownProperty",
    "UnknownRuntimeVar",
    "WriteError",
]


class RxDjangoError(Exception):
    """Root of every exception RxDjango raises."""

    code: str = "error"


class ChannelDeclarationError(RxDjangoError, TypeError):
    """A ``ContextChannel`` or its state serializer is declared wrongly.

    Raised at class creation (or when the app registry becomes ready), never
    at connection time.
    """

    code = "error/declaration"


class UnknownProperty(ChannelDeclarationError):
    """A nested serializer follows a model property that no ``related_property``
    declares, so RxDjango cannot tell which rows it reaches."""

    code = "error/unknown-property"


class ActionNotAsync(ChannelDeclarationError):
    """``@action`` on a method that is not ``async def``."""

    code = "error/action-not-async"


class ClientError(RxDjangoError):
    """Raised by project code (a channel hook, an action, a ``can_*`` check) to answer
    the client with ``status`` and this message. The message travels as is, so it
    must not carry internal detail."""

    default_status = 400
    default_message = "bad request"

    def __init__(self, message: str | None = None, status: int | None = None) -> None:
        status = self.default_status if status is None else status
        if not 400 <= status < 500:
            raise ValueError(f"{type(self).__name__} status must be a 4xx code, got {status}")
        self.message = message or self.default_message
        self.status = status
        super().__init__(self.message)


class ActionError(ClientError):
    """Raise inside an ``@action`` to answer the caller with this message.

    ``status`` is a 4xx code sent as ``error.code`` (400 unless given).
    """

    code = "error/action"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


class UnauthorizedError(ClientError):
    """The user is not (or no longer) authenticated: raised from ``has_permission``,
    ``get_instance_id`` or ``list_instances`` it refuses the socket with 401; from an
    action or a ``can_*`` check it answers that call with 401."""

    code = "error/unauthorized"
    default_status = 401
    default_message = "unauthorized"


class ForbiddenError(ClientError):
    """The user may not do this: 403, wherever ``UnauthorizedError`` may be raised."""

    code = "error/forbidden"
    default_status = 403
    default_message = "forbidden"


class AnchorDoesNotExist(ClientError):
    """The anchor named by the route does not exist: the socket is refused with 404.

    RxDjango raises it itself for a missing anchor; ``get_instance_id`` may raise it
    for ids it cannot resolve."""

    code = "error/not-found"
    default_status = 404
    default_message = "not found"


class WriteError(ClientError):
    """A write (save, create, delete) is refused. Raise it from ``can_save``,
    ``can_create`` or ``can_delete`` to refuse with your message (400 unless given);
    every refusal the library answers is one too."""

    code = "error/write"
    default_message = "the write was refused"


class UnknownRuntimeVar(RxDjangoError, KeyError):
    """``set_runtime_var`` with a name the channel's ``RuntimeState`` does not declare."""

    code = "error/runtime-var"


class RxDjangoBug(RxDjangoError, AssertionError):
    """An invariant of the library itself did not hold: please report it."""

    code = "error/internal"
