"""What the fields of a project's DRF serializer mean to RxDjango.

Which fields are nested serializers (they become layers), which rows of other models a
plain value reads (a change there re-reads it), which relation an attribute names,
what startup refuses because it would fail or mislead on every connect, and the
context serializers get (there is no HTTP request behind a broadcast).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Collection
from typing import Any, cast
from urllib.parse import urlsplit

from django.db import models
from django.http import HttpRequest
from rest_framework import serializers

from .conf import rx_settings
from .decorators import AccessorProperty
from .exceptions import ChannelDeclarationError

__all__ = [
    "BaseUrlRequest",
    "link_table",
    "made_by_depth",
    "method_of",
    "nested_serializer",
    "pascal",
    "paths_read",
    "reads_outside",
    "refuse_unserved",
    "relation_named",
    "serializer_context",
]


def made_by_depth(serializer_class: type) -> bool:
    """Whether DRF generated the class for ``Meta.depth`` (``build_nested_field``)."""
    return (
        serializer_class.__module__ == serializers.__name__
        and serializer_class.__name__ == "NestedSerializer"
    )


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


_HYPERLINKED = (serializers.HyperlinkedRelatedField, serializers.HyperlinkedIdentityField)


def _hyperlinked(serializer_field: Any) -> bool:
    if isinstance(serializer_field, serializers.ManyRelatedField):
        serializer_field = serializer_field.child_relation
    return isinstance(serializer_field, _HYPERLINKED)


def serializer_context() -> dict[str, Any]:
    """What the project's serializers get as ``context``: a request for ``RX_BASE_URL``
    when that is set (hyperlinked fields build absolute URLs from it)."""
    base_url = rx_settings.RX_BASE_URL
    return {} if base_url is None else {"request": BaseUrlRequest(str(base_url))}


class BaseUrlRequest(HttpRequest):
    """The part of a request that hyperlinked fields read: scheme and host, from
    ``RX_BASE_URL`` (there is no HTTP request behind a WebSocket broadcast)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        parts = urlsplit(base_url)
        self._base_scheme, self._base_host = parts.scheme or "http", parts.netloc
        self.path = self.path_info = "/"

    def _get_scheme(self) -> str:
        return self._base_scheme

    def get_host(self) -> str:
        return self._base_host


def refuse_unserved(
    serializer_class: type[serializers.ModelSerializer],
    flat: serializers.ModelSerializer,
    nested: dict[str, Any],
    owner: str,
) -> None:
    """Refuse at startup what would fail or mislead on every connect."""
    where = f"{owner}: {serializer_class.__name__}"
    if rx_settings.RX_BASE_URL is None:
        for name, serializer_field in flat.fields.items():
            if _hyperlinked(serializer_field):
                raise ChannelDeclarationError(
                    f"{where}.{name} is a hyperlinked field: it builds URLs from a request, "
                    "and broadcasts have none. Set RX_BASE_URL (e.g. "
                    "'https://api.example.com') or use a primary key field"
                )
    overridden = serializer_class.to_representation is not serializers.Serializer.to_representation
    if nested and overridden:
        raise ChannelDeclarationError(
            f"{where} overrides to_representation, but RxDjango serializes its nested "
            f"fields ({', '.join(nested)}) as records of their own, so the override would "
            "not see them; compute extra values in SerializerMethodFields instead (an "
            "override on a serializer without nested serializers is fine)"
        )


def nested_serializer(serializer_field: Any) -> serializers.ModelSerializer | None:
    if isinstance(serializer_field, serializers.ListSerializer):
        child = serializer_field.child
        return child if isinstance(child, serializers.ModelSerializer) else None
    if isinstance(serializer_field, serializers.ModelSerializer):
        return serializer_field
    return None


def method_of(serializer_class: type, serializer_field: Any) -> Callable[..., Any] | None:
    """The serializer method behind a ``SerializerMethodField`` (None if missing)."""
    return getattr(serializer_class, str(serializer_field.method_name), None)


def paths_read(
    model: type[models.Model], serializer_class: type, name: str, serializer_field: Any
) -> list[str]:
    """ORM paths from ``model`` to the rows of other models a flat field of
    ``serializer_class`` reads.

    A method field reads what its ``@depends_on(...)`` declares (its subtree is added by
    :mod:`rxdjango._state_model`). A primary-key related field reads only
    the foreign key column of its own row, so it depends on nothing else.
    """
    if isinstance(serializer_field, serializers.SerializerMethodField):
        return list(getattr(method_of(serializer_class, serializer_field), "rx_depends_on", ()))
    source = cast(str, serializer_field.source or name)
    if source == "*":
        return []
    attr = getattr(model, source, None) if source.isidentifier() else None
    if isinstance(attr, AccessorProperty):
        return [attr.accessor]
    if isinstance(serializer_field, serializers.ManyRelatedField):
        pk_only = serializer_field.child_relation.use_pk_only_optimization()
    elif isinstance(serializer_field, serializers.RelatedField):
        pk_only = serializer_field.use_pk_only_optimization()
    else:
        pk_only = False
    lookups = []
    current = model
    for part in source.split("."):
        relation = relation_named(current, part)
        if relation is None or not isinstance(relation.related_model, type):
            break  # a column, or something no query can follow (a generic foreign key)
        lookups.append(relation.name)
        current = relation.related_model
    # Only ids: the row's own foreign key, or a list whose membership changes with the
    # other rows' foreign keys (reverse) or the link table (many-to-many, tracked apart).
    if pk_only and len(lookups) == 1 and not relation_named(model, source).one_to_many:
        return []
    return ["__".join(lookups)] if lookups else []


def link_table(model: type[models.Model], serializer_field: Any, name: str) -> Any:
    """The many-to-many link model a related field lists (its rows are its membership)."""
    if not isinstance(serializer_field, serializers.ManyRelatedField):
        return None
    relation = relation_named(model, cast(str, serializer_field.source or name))
    if relation is None or not relation.many_to_many:
        return None
    m2m = relation if relation.concrete else relation.field
    return m2m.remote_field.through


def relation_named(model: type[models.Model], source: str) -> Any:
    """The relation of ``model`` reached by attribute ``source`` (field or reverse accessor)."""
    model_field: Any  # a field or a reverse relation, read duck-typed
    for model_field in model._meta.get_fields():
        if not model_field.is_relation:
            continue
        reverse = model_field.auto_created and not model_field.concrete
        name = model_field.get_accessor_name() if reverse else model_field.name
        if name == source:
            return model_field
    return None


def reads_outside(
    model: type[models.Model], method: Callable[..., Any], followed: Collection[str]
) -> list[str]:
    """What a method field's body visibly reads beyond its record's subtree: relations of
    ``model`` it follows from its instance argument other than ``followed`` (the nested
    relations, by name), and managers of any model it queries (``X.objects``).

    Read from the source, so only what is written there: a helper it calls, or a
    property of the model, is not seen; [] when the source cannot be read.
    """
    try:
        function = ast.parse(textwrap.dedent(inspect.getsource(method))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return []
    if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
        return []
    arguments = function.args.args
    if len(arguments) < 2:
        return []
    instance = arguments[1].arg
    found: set[str] = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.Attribute) or not isinstance(node.value, ast.Name):
            continue
        if node.value.id == instance:
            relation = relation_named(model, node.attr)
            if relation is not None and relation.name not in followed:
                found.add(f"{instance}.{node.attr}")
        elif node.attr == "objects":
            found.add(f"{node.value.id}.objects")
    return sorted(found)
