"""Write operations a channel may allow on a serializer type (``Meta.writable``)."""

from __future__ import annotations

from typing import Final

__all__ = ["CREATE", "DELETE", "OPERATIONS", "SAVE"]

SAVE: Final = "save"
CREATE: Final = "create"
DELETE: Final = "delete"

OPERATIONS: Final = frozenset({SAVE, CREATE, DELETE})
