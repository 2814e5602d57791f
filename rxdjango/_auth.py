"""Authentication of the first client frame with a DRF token."""

from __future__ import annotations

from typing import Any, cast

__all__ = ["user_for_token"]


def user_for_token(key: str) -> Any | None:
    """The active user owning the DRF token ``key``, or None (synchronous ORM code)."""
    from rest_framework.authtoken.models import Token

    # No key holds a NUL byte (PostgreSQL refuses to even compare one) or is longer
    # than the column: such a key is unknown, without asking the database.
    max_length = cast(int, Token._meta.get_field("key").max_length)  # a CharField's: always set
    if "\x00" in key or len(key) > max_length:
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user
