"""What a ``@related_property`` returns, read by running its body as DRF would.

A related property's lookup says which rows *may* belong to a parent (it finds the
candidates in bulk); its body says which do (``self.tasks.filter(done=False)``). The
state holds exactly what the body returns: at load, after changes (a row entering
or leaving the filter arrives as a create or delete), and for the write checks.
The body runs once per parent row, so a related property costs one query per
parent: prefer a plain relation where no filter is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models

from ._state_model import Edge

__all__ = ["members", "parents_of"]

#: Largest ``pk__in`` list sent in one query (SQLite limits bound parameters).
IN_CHUNK = 5000


def _pks(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, models.Model):
        return [value.pk]
    if isinstance(value, models.QuerySet | models.Manager):
        return list(value.values_list("pk", flat=True))
    return [item.pk for item in value]


def members(edge: Edge, parent_pks: Iterable[Any]) -> dict[Any, list[Any]]:
    """The child pks each parent's property returns, in its order (model pks)."""
    assert edge.source is not None  # set on every related-property edge
    result: dict[Any, list[Any]] = {}
    for parent in edge.parent.model._default_manager.filter(pk__in=list(parent_pks)):
        result[parent.pk] = list(dict.fromkeys(_pks(getattr(parent, edge.source))))
    return result


def parents_of(edge: Edge, child_pks: Iterable[Any]) -> dict[Any, set[Any]]:
    """The parents whose property returns each of ``child_pks`` (model pks): the
    candidates its lookup reaches, one query per chunk, kept if the body returns them."""
    assert edge.child_lookup is not None  # set on every related-property edge
    pk_list = list(child_pks)
    candidates: dict[Any, set[Any]] = {}
    for start in range(0, len(pk_list), IN_CHUNK):
        rows = (
            edge.child.model._default_manager.filter(pk__in=pk_list[start : start + IN_CHUNK])
            .exclude(**{f"{edge.child_lookup}__isnull": True})
            .values_list("pk", edge.child_lookup)
        )
        for child, parent in rows:
            candidates.setdefault(child, set()).add(parent)
    parent_pks = {parent for parents in candidates.values() for parent in parents}
    listed = {parent: set(children) for parent, children in members(edge, parent_pks).items()}
    return {
        child: {parent for parent in parents if child in listed.get(parent, ())}
        for child, parents in candidates.items()
    }
