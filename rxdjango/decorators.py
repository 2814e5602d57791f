"""Declarations of what computed values read.

``related_property(accessor, reverse_accessor=None)``, as the original RxDjango
documents it, for projects written for it; :func:`depends_on` for method fields.

``accessor`` is the query path from the model that declares the property to the
rows it depends on (``'items'``); ``reverse_accessor`` the path from those rows
back (``'order'``), worked out from ``accessor`` when omitted.

* On a property a nested serializer follows, it declares a computed relation,
  as :func:`rxdjango.relations.related_property` does (with the reverse path).
* On a property serialized as a plain value (a total, a count), it declares what
  the value depends on: when a row reached through ``accessor`` is saved,
  created or deleted, the records of the models that reach it are read again,
  so clients see the new value.

    class Order(models.Model):
        @related_property("items", "order")
        def total_price(self):
            return sum(item.price for item in self.items.all())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.db import models

from .exceptions import ChannelDeclarationError
from .relations import RelatedProperty

__all__ = ["AccessorProperty", "depends_on", "related_property"]

Method = TypeVar("Method", bound=Callable[..., Any])


class AccessorProperty(RelatedProperty):
    """A property with the query path to the rows it reads (the original's form)."""

    def __init__(
        self, func: Callable[[Any], Any], accessor: str, reverse_accessor: str | None
    ) -> None:
        super().__init__(func, reverse_accessor or "", many=None)
        self.accessor = accessor
        self.reverse_accessor = reverse_accessor

    def reverse_lookup(self, model: type, where: str) -> str:
        if self.reverse_accessor:
            return self.reverse_accessor
        return reverse_path(model, self.accessor, where)

    def source_model(self, model: type[models.Model], where: str) -> type[models.Model]:
        """The model of the rows ``accessor`` reaches from ``model``."""
        return walk(model, self.accessor, where)[-1][1]


def related_property(
    accessor: str, reverse_accessor: str | None = None
) -> Callable[[Callable[[Any], Any]], AccessorProperty]:
    """Mark a model method as a property that reads the rows ``accessor`` reaches."""
    if not isinstance(accessor, str) or not accessor:
        raise TypeError(f"related_property expects a query path string, got {accessor!r}")
    if reverse_accessor is not None and (
        not isinstance(reverse_accessor, str) or not reverse_accessor
    ):
        raise TypeError(
            f"related_property's reverse_accessor must be a query path string, "
            f"got {reverse_accessor!r}"
        )

    def decorate(func: Callable[[Any], Any]) -> AccessorProperty:
        return AccessorProperty(func, accessor, reverse_accessor)

    return decorate


def depends_on(*paths: str) -> Callable[[Method], Method]:
    """Declare which rows a ``SerializerMethodField``'s method reads beyond its instance's
    subtree: ORM query paths from the serializer's model (``"project__owner"``). A change
    to any row along a path re-evaluates the records that reach it.

        class JobSerializer(serializers.ModelSerializer):
            open_tasks = serializers.SerializerMethodField()

            @depends_on("tasks")
            def get_open_tasks(self, job):
                return job.tasks.filter(done=False).count()
    """
    for path in paths:
        if not isinstance(path, str) or not path:
            raise TypeError(f"depends_on expects query path strings, got {path!r}")

    def decorate(method: Method) -> Method:
        method.rx_depends_on = paths  # type: ignore[attr-defined]
        return method

    return decorate


def walk(model: type[models.Model], path: str, where: str) -> list[tuple[Any, type[models.Model]]]:
    """The relations along ``path`` from ``model``, each with the model it leads to."""
    steps = []
    current = model
    for part in path.split("__"):
        try:
            relation = current._meta.get_field(part)
        except Exception:
            relation = None
        if relation is None or not relation.is_relation or relation.related_model is None:
            raise ChannelDeclarationError(
                f"{where}: {part!r} in {path!r} is not a relation of {current.__name__}"
            )
        # A class by now: Django resolves lazy references ("self", "app.Model") at setup.
        current = cast(type[models.Model], relation.related_model)
        steps.append((relation, current))
    return steps


def reverse_path(model: type[models.Model], path: str, where: str) -> str:
    """The query path back to ``model`` from the rows ``path`` reaches."""
    back = []
    for relation, _ in walk(model, path, where):
        if relation.concrete:  # forward FK, one-to-one or many-to-many field
            back.append(relation.related_query_name())
        else:  # the reverse side of one of those
            back.append(relation.field.name)
    return "__".join(reversed(back))
