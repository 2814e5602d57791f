"""Authentication of the first client frame with a DRF token."""

from __future__ import annotations

from typing import Any

__all__ = ["user_for_token"]


def user_for_token(key: str) -> Any | None:
    """The active user owning the DRF token ``key``, or None (synchronous ORM code)."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user
