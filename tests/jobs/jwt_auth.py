"""Authenticate RxDjango clients with simplejwt access tokens."""

from typing import Any

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError


def simplejwt(token: str | None, scope: dict[str, Any]) -> Any | None:
    """The user of a valid, unexpired access token; None for anything else."""
    if token is None:
        return None
    authentication = JWTAuthentication()
    try:
        return authentication.get_user(authentication.get_validated_token(token.encode()))
    except (InvalidToken, TokenError, AuthenticationFailed):
        return None
