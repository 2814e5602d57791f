"""The vocabulary of state on its way to clients: records, changes, where rows come from.

Shared by the loader, the propagator, the renderers and both caches, so none of them
imports another for a type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import _codec
from ._protocol import Operation
from ._state_model import Key, Layer

__all__ = ["AnchorRef", "Audience", "Change", "FlatRecord", "RecordSource", "Retained"]

#: Who may see a record: None for everyone, else only these users (empty: nobody).
Audience = frozenset[Any] | None

#: (channel id, anchor pk as sent on the wire)
AnchorRef = tuple[str, Any]
#: The key of a deleted record → pks of the other anchors of the channel still holding it.
Retained = dict[Key, frozenset[Any]]


@dataclass(frozen=True)
class Change:
    """One record change in an anchor's history (for reconnect catch-up)."""

    tstamp: float
    key: Key
    deleted: bool
    #: Who received something about the record in this change (None: every client).
    audience: Audience


@dataclass
class FlatRecord:
    """One instance as cached: wire fields, owner, and the keys it references."""

    key: Key
    data: dict[str, Any]
    #: The ``user_key`` value of the row (a wire pk), None for layers without one.
    owner: Any = None
    refs: list[Key] = field(default_factory=list)
    tstamp: float = 0.0
    #: Parents that hold this record through a child-side relation (reverse foreign key
    #: or related property), as of when it was read: a change here means a parent's
    #: list of ids changed.
    parent_links: frozenset[Key] = frozenset()
    #: Who may see it in its anchor (None: everyone), inherited from the private records
    #: above it (:mod:`rxdjango._audience`); set when the record is placed in an anchor.
    audience: frozenset[Any] | None = None
    #: The audiences of the children it names that are not public, so it can be rendered
    #: for one viewer (its lists filtered) without reading them.
    private_children: Mapping[Key, frozenset[Any]] = field(default_factory=dict)
    _initial: bytes | None = field(default=None, repr=False, compare=False)

    def initial_state_bytes(self) -> bytes:
        """The record encoded as ``initial_state``, computed once per record.

        Records are never mutated after they are built (a change replaces the
        record), so the encoding can be shared by every client that loads it.
        """
        if self._initial is None:
            self._initial = _codec.encode_bytes(
                {**self.data, "_tstamp": self.tstamp, "_operation": Operation.INITIAL_STATE}
            )
        return self._initial


class RecordSource(Protocol):
    """Where records are read from: the database in production (``_loader.ORM_RECORDS``),
    a table of records in the propagator's tests."""

    def fetch_layer(self, layer: Layer, pks: Iterable[Any], tstamp: float) -> dict[Any, FlatRecord]:
        """The rows of ``pks`` of one layer that exist, as records (by wire pk)."""
        ...

    def parent_links(self, layer: Layer, pks: Iterable[Any]) -> dict[Any, frozenset[Key]]:
        """For rows of ``pks``: the parents that hold them through a child-side relation."""
        ...
