"""Runtime state: a flat ``RuntimeState(TypedDict)`` declared inside a channel."""

from __future__ import annotations

import types
import typing
from typing import Any

from .exceptions import ChannelDeclarationError

__all__ = ["runtime_defaults"]

_ZERO: dict[Any, Any] = {int: 0, float: 0.0, str: "", bool: False}


def _zero(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        return None
    if hint is list or origin is list:
        return []
    if hint is dict or origin is dict or typing.is_typeddict(hint):
        return {}
    return _ZERO.get(hint)


def runtime_defaults(cls: type) -> dict[str, Any] | None:
    """Initial runtime state of ``cls``: class-body values, else each type's zero value.

    class RuntimeState(TypedDict):
        viewers: int          # starts at 0
        status: str = "idle"  # starts at "idle"
    """
    declared = getattr(cls, "RuntimeState", None)
    if declared is None:
        return None
    if not typing.is_typeddict(declared):
        raise ChannelDeclarationError(
            f"{cls.__qualname__}.RuntimeState must be a TypedDict subclass"
        )
    hints = typing.get_type_hints(declared)
    return {name: getattr(declared, name, _zero(hint)) for name, hint in hints.items()}
