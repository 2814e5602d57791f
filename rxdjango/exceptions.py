"""Exceptions raised by RxDjango.

Every error has a stable machine ``code`` (the one that travels on the wire
where it reaches a client) beside a human message that names the fix.
"""

from __future__ import annotations

__all__ = ["ChannelDeclarationError", "RxDjangoError"]


class RxDjangoError(Exception):
    """Root of every exception RxDjango raises."""

    code: str = "error"


class ChannelDeclarationError(RxDjangoError, TypeError):
    """A ``ContextChannel`` or its state serializer is declared wrongly.

    Raised at class creation (or when the app registry becomes ready), never
    at connection time.
    """

    code = "error/declaration"
