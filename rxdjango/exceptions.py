"""Exceptions raised by RxDjango.

Every error has a stable machine ``code`` (the one that travels on the wire
where it reaches a client) beside a human message that names the fix.
"""

from __future__ import annotations

__all__ = ["ActionError", "ChannelDeclarationError", "RxDjangoError", "UnknownRuntimeVar"]


class RxDjangoError(Exception):
    """Root of every exception RxDjango raises."""

    code: str = "error"


class ChannelDeclarationError(RxDjangoError, TypeError):
    """A ``ContextChannel`` or its state serializer is declared wrongly.

    Raised at class creation (or when the app registry becomes ready), never
    at connection time.
    """

    code = "error/declaration"


class ActionError(RxDjangoError):
    """Raise inside an ``@action`` to answer the caller with this message.

    ``status`` is a 4xx code sent as ``error.code``; the message travels as is,
    so it must not carry internal detail.
    """

    code = "error/action"

    def __init__(self, message: str, status: int = 400) -> None:
        if not 400 <= status < 500:
            raise ValueError(f"ActionError status must be a 4xx code, got {status}")
        super().__init__(message)
        self.message = message
        self.status = status


class UnknownRuntimeVar(RxDjangoError, KeyError):
    """``set_runtime_var`` with a name the channel's ``RuntimeState`` does not declare."""

    code = "error/runtime-var"
