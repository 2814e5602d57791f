"""TypeScript types for DRF fields and Python type hints (used by ``makefrontend``).

Every function returns TypeScript source text. A type that cannot be known
(an unannotated ``SerializerMethodField``, ``typing.Any``) becomes
``unknown`` — never ``any`` — and is reported to the caller, so the command
can say which annotation to add.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import json
import re
import types
import typing
import uuid
from typing import Any, cast

from django.db import models
from rest_framework import serializers
from rest_framework.settings import api_settings

__all__ = ["TypeContext", "camel_case", "field_type", "hint_type", "model_field_type", "pk_type"]

IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


class TypeContext:
    """Collects what could not be typed, and named object types to emit once."""

    def __init__(self) -> None:
        self.unknown: list[str] = []
        #: TypedDict name -> TypeScript body, emitted as interfaces.
        self.named: dict[str, str] = {}
        #: TypedDict name -> the TypedDict it stands for (two modules may reuse a name).
        self.typed_dicts: dict[str, Any] = {}

    def unknown_type(self, where: str) -> str:
        self.unknown.append(where)
        return "unknown"


def camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def property_name(name: str) -> str:
    return name if IDENTIFIER.match(name) else json.dumps(name)


def literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    return json.dumps(str(value))


def array_of(item: str) -> str:
    return f"{item}[]" if re.fullmatch(r"[\w.<>, ]+", item) and "," not in item else f"({item})[]"


def union(parts: list[str]) -> str:
    unique = list(dict.fromkeys(parts))
    return " | ".join(unique) if unique else "never"


def _nullable(text: str, allow_null: bool) -> str:
    return f"{text} | null" if allow_null and not text.endswith("| null") else text


def _as_string(field: serializers.Field, default: bool) -> bool:
    """Whether DRF renders this number as a string (its field option, else the setting)."""
    return bool(getattr(field, "coerce_to_string", default))


def pk_type(model: type[models.Model]) -> str:
    return model_field_type(model._meta.pk, TypeContext(), f"{model.__name__}.pk")


def model_field_type(field: Any, context: TypeContext, where: str) -> str:
    """The type of a model field as DRF renders it (for ``ReadOnlyField`` and pks)."""
    if isinstance(field, models.ForeignKey | models.OneToOneField):
        # A class by now: Django resolves lazy references ("self", "app.Model") at setup.
        return _nullable(pk_type(cast(type[models.Model], field.related_model)), field.null)
    if isinstance(field, models.BooleanField):
        text = "boolean"
    elif isinstance(field, models.DecimalField):
        text = "string"
    elif isinstance(field, models.IntegerField | models.FloatField | models.AutoField):
        text = "number"
    elif isinstance(field, models.JSONField):
        return "JSONValue"
    elif isinstance(
        field,
        models.CharField
        | models.TextField
        | models.UUIDField
        | models.DateField
        | models.TimeField
        | models.DurationField
        | models.FileField
        | models.GenericIPAddressField,
    ):
        text = "string"
    else:
        return context.unknown_type(where)
    if getattr(field, "choices", None):
        text = union([literal(value) for value, _ in field.flatchoices])
    return _nullable(text, bool(getattr(field, "null", False)))


def field_type(field: serializers.Field, context: TypeContext, where: str) -> str:
    """The type of one (non-nested) serializer field's output."""
    text = _field_type(field, context, where)
    return _nullable(text, bool(getattr(field, "allow_null", False)))


def _field_type(field: serializers.Field, context: TypeContext, where: str) -> str:
    if isinstance(field, serializers.ManyRelatedField):
        return array_of(_field_type(field.child_relation, context, where))
    if isinstance(field, serializers.PrimaryKeyRelatedField):
        model = getattr(field.queryset, "model", None) if field.queryset is not None else None
        if model is None:
            model = _model_of_source(field)
        if field.pk_field is not None:
            # The stubs say str; DRF holds the serializer field given as pk_field=.
            return _field_type(cast(serializers.Field, field.pk_field), context, where)
        return pk_type(model) if model is not None else context.unknown_type(where)
    if isinstance(
        field,
        serializers.SlugRelatedField
        | serializers.HyperlinkedRelatedField
        | serializers.StringRelatedField
        | serializers.HyperlinkedIdentityField,
    ):
        return "string"
    if isinstance(field, serializers.SerializerMethodField):
        return _method_field_type(field, context, where)
    if isinstance(field, serializers.MultipleChoiceField):
        return array_of(union([literal(k) for k in field.choices]))
    if isinstance(field, serializers.ChoiceField):
        return union([literal(k) for k in field.choices])
    if isinstance(field, serializers.BooleanField):
        return "boolean"
    if isinstance(field, serializers.DecimalField):
        return "string" if _as_string(field, api_settings.COERCE_DECIMAL_TO_STRING) else "number"
    # DRF has BigIntegerField; djangorestframework-stubs lack it, hence the ignore.
    if isinstance(field, serializers.BigIntegerField):  # type: ignore[attr-defined]
        return "string" if _as_string(field, api_settings.COERCE_BIGINT_TO_STRING) else "number"
    if isinstance(field, serializers.IntegerField | serializers.FloatField):
        return "number"
    if isinstance(field, serializers.JSONField):
        return "JSONValue"
    if isinstance(field, serializers.HStoreField):
        return "Record<string, string | null>"
    if isinstance(field, serializers.DictField):
        return f"Record<string, {field_type(field.child, context, where)}>"
    if isinstance(field, serializers.ListField):
        return array_of(field_type(field.child, context, where))
    if isinstance(field, serializers.FileField):  # ImageField too: a URL or name
        return "string"
    if isinstance(
        field,
        serializers.CharField
        | serializers.UUIDField
        | serializers.DateTimeField
        | serializers.DateField
        | serializers.TimeField
        | serializers.DurationField
        | serializers.IPAddressField
        | serializers.FilePathField,
    ):
        return "string"
    if isinstance(field, serializers.ReadOnlyField):
        model_field = _model_field_of_source(field)
        if model_field is not None:
            return model_field_type(model_field, context, where)
    return context.unknown_type(where)


def _model_field_of_source(field: serializers.Field) -> Any:
    """The model field a serializer field reads (through a ``many=True`` wrapper too)."""
    if isinstance(field.parent, serializers.ManyRelatedField):
        field = field.parent
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    # The stubs allow a callable source; a bound DRF field's is a str.
    if model is None or not field.source or "." in cast(str, field.source):
        return None
    try:
        return model._meta.get_field(field.source)
    except Exception:
        return None


def _model_of_source(field: serializers.Field) -> type[models.Model] | None:
    model_field = _model_field_of_source(field)
    return getattr(model_field, "related_model", None)


def _method_field_type(
    field: serializers.SerializerMethodField, context: TypeContext, where: str
) -> str:
    method = getattr(field.parent, field.method_name, None)
    if method is None:
        return context.unknown_type(where)
    try:
        hints = typing.get_type_hints(method)
    except (NameError, TypeError):
        return context.unknown_type(where)
    if "return" not in hints:
        return context.unknown_type(f"{where} (annotate the return type of {field.method_name})")
    return hint_type(hints["return"], context, where)


_SCALARS: dict[Any, str] = {
    int: "number",
    float: "number",
    str: "string",
    bool: "boolean",
    type(None): "null",
    None: "null",
    datetime.datetime: "string",
    datetime.date: "string",
    datetime.time: "string",
    datetime.timedelta: "string",
    decimal.Decimal: "string",
    uuid.UUID: "string",
}


def hint_type(hint: Any, context: TypeContext, where: str) -> str:
    """The JSON form of a Python type hint (action parameters and results, runtime state)."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint is Any or hint is inspect.Parameter.empty:
        return context.unknown_type(where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return hint_type(args[0], context, where)
    if origin in (typing.Union, types.UnionType):
        return union([hint_type(arg, context, where) for arg in args])
    if origin is typing.Literal:
        return union([literal(arg) for arg in args])
    if typing.is_typeddict(hint):
        return _typed_dict(hint, context, where)
    if hint is list or origin is list or origin is set or origin is frozenset:
        return array_of(hint_type(args[0], context, where) if args else "unknown")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return array_of(hint_type(args[0], context, where))
        return "[" + ", ".join(hint_type(arg, context, where) for arg in args) + "]"
    if hint is dict or origin is dict:
        value = hint_type(args[1], context, where) if len(args) == 2 else "unknown"
        return f"Record<string, {value}>"
    if isinstance(hint, type) and issubclass(hint, models.Model):
        return pk_type(hint)
    return context.unknown_type(f"{where} ({hint!r})")


def _typed_dict(hint: Any, context: TypeContext, where: str) -> str:
    name = hint.__name__
    owner = context.typed_dicts.setdefault(name, hint)
    if owner is not hint:  # another TypedDict of that name: qualify this one by module
        name = "".join(p[:1].upper() + p[1:] for p in hint.__module__.split(".")) + name
        context.typed_dicts.setdefault(name, hint)
    if name not in context.named:
        context.named[name] = ""  # placeholder against recursion
        context.named[name] = object_body(
            typing.get_type_hints(hint), set(hint.__required_keys__), context, f"{where}.{name}"
        )
    return name


def object_body(hints: dict[str, Any], required: set[str], context: TypeContext, where: str) -> str:
    lines = []
    for key, value in hints.items():
        optional = "" if key in required else "?"
        lines.append(f"  {property_name(key)}{optional}: {hint_type(value, context, where)};")
    return "{\n" + "\n".join(lines) + "\n}"
