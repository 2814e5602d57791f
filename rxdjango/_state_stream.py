"""What a client receives of an anchor when it (re)connects, and live frames per client.

The initial state (or the catch-up since the client's ``lastUpdate``) is rendered for
one user record by record, reading the snapshot as it goes; live frames of a client
holding several anchors drop the deletes of records another of its anchors still holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import _codec
from ._backends import Snapshot
from ._change import Retained
from ._protocol import Operation
from ._render import changed_for, render_initial, render_since
from ._state_model import StateModel

__all__ = ["state_items", "state_observers", "without_retained"]

#: Called in the sending thread each time it is about to read more of a client's state
#: or catch-up (a test seam: :func:`rxdjango.testing.while_sending_state`).
state_observers: list[Callable[[], None]] = []


def state_items(snapshot: Snapshot, state_model: StateModel, viewer: Any) -> Iterator[bytes]:
    """Encoded records of a snapshot as ``viewer`` may see them (reads as it goes, in the
    thread that takes them)."""
    _before_reading()
    if snapshot.partial:
        keys = changed_for(snapshot.changes, viewer)
        current = snapshot.current(keys)
        items = render_since(snapshot.changes, current, state_model, viewer)
    else:
        items = render_initial(snapshot.records(), state_model, viewer)
    for item in items:
        yield item
        _before_reading()


def _before_reading() -> None:
    for observer in list(state_observers):
        observer()


def without_retained(frame: str, retained: Retained, other_anchors: set[Any]) -> str | None:
    """Drop deletes of records that another anchor of this connection still holds.

    None when nothing is left to send.
    """
    keep_alive = {key for key, holders in retained.items() if holders & other_anchors}
    if not keep_alive:
        return frame
    records = [
        r
        for r in _codec.decode(frame)
        if not (
            r.get("_operation") == Operation.DELETE
            and (r.get("_instance_type"), r.get("id")) in keep_alive
        )
    ]
    return _codec.encode(records) if records else None
