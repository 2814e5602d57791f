"""Notable events of a running process, one log line each, on the ``rxdjango.events``
logger: ``<event> key=value ...`` with the channel, anchor and user ids involved, never
the data. The same fields are on the record as ``record.rx`` (and the event's name as
``record.rx_event``), for a JSON formatter. The events and their levels are listed in
docs/production.md.
"""

from __future__ import annotations

import logging
from typing import Any

from ._codec import encode

__all__ = ["emit"]

logger = logging.getLogger("rxdjango.events")


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` (ids and counts; fields that are None are left out)."""
    if not logger.isEnabledFor(level):
        return
    present = {name: value for name, value in fields.items() if value is not None}
    text = " ".join(f"{name}={_plain(value)}" for name, value in present.items())
    logger.log(level, "%s %s", event, text, extra={"rx_event": event, "rx": present})


def _plain(value: Any) -> str:
    """A value as one token: numbers and simple strings as they are, others as JSON."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value and all(c.isalnum() or c in "._:-/" for c in value):
        return value
    return encode(value)
