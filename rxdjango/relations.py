"""Declare model properties that a nested serializer may follow.

A nested serializer field normally follows a model relation (forward or
reverse foreign key, one-to-one, many-to-many). When the related objects are
computed instead, decorate the model method with :func:`related_property` and
give the ORM lookup that leads from the *related* model back to this one, so
RxDjango can load the relation in bulk and find the parents of a changed
instance.

    class Job(models.Model):
        project = models.ForeignKey(Project, on_delete=models.CASCADE)

        @related_property("project__jobs")
        def team(self):
            return Participant.objects.filter(project__jobs=self)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["RelatedProperty", "related_property"]


class RelatedProperty:
    """A read-only property that also carries its reverse ORM lookup."""

    def __init__(self, func: Callable[[Any], Any], lookup: str, many: bool | None) -> None:
        self.func = func
        self.lookup = lookup
        #: None: whatever the nested serializer says (``many=True`` or not).
        self.many = many
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return self.func(instance)

    def reverse_lookup(self, model: type, where: str) -> str:
        """The lookup from the related model back to ``model`` (for its filters)."""
        return self.lookup


def related_property(lookup: str, *, many: bool = True) -> Callable[[Callable], RelatedProperty]:
    """Mark a model method as a relation reachable from ``lookup`` on the related model."""
    if not isinstance(lookup, str) or not lookup:
        raise TypeError(f"related_property expects an ORM lookup string, got {lookup!r}")

    def decorate(func: Callable[[Any], Any]) -> RelatedProperty:
        return RelatedProperty(func, lookup, many)

    return decorate
