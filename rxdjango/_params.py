"""Check and convert JSON values against Python type hints (action parameters).

Pure functions: no Django, no I/O. A mismatch raises :class:`ParamError` whose
message names the parameter and says what was expected, e.g.
``parameter 'due': expected a date (ISO string), got number``.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ParamError", "Parameter", "bind", "convert", "signature_of"]


class ParamError(ValueError):
    """A client value that does not match its declared type."""


_JSON_NAMES = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is Any:
        return "any value"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if origin is list:
        return (
            f"a list of {_describe(typing.get_args(hint)[0])}"
            if typing.get_args(hint)
            else "a list"
        )
    if origin is dict or hint is dict:
        return "an object"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.is_typeddict(hint):
        return f"an object ({hint.__name__})"
    names = {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        datetime.datetime: "a datetime (ISO string)",
        datetime.date: "a date (ISO string)",
        decimal.Decimal: "a decimal",
        uuid.UUID: "a UUID string",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def convert(value: Any, hint: Any, name: str) -> Any:
    """``value`` checked against ``hint`` and converted (ISO strings to datetimes, ...)."""
    try:
        return _convert(value, hint, name)
    except ParamError:
        raise
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ParamError(
            f"parameter '{name}': expected {_describe(hint)}, got {_json_name(value)}"
        ) from exc


def _fail(value: Any, hint: Any, name: str) -> typing.NoReturn:
    raise ParamError(f"parameter '{name}': expected {_describe(hint)}, got {_json_name(value)}")


def _convert(value: Any, hint: Any, name: str) -> Any:
    if hint is Any or hint is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _convert(value, typing.get_args(hint)[0], name)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _convert(value, option, name)
            except (ParamError, ValueError, TypeError, ArithmeticError):
                continue
        _fail(value, hint, name)
    if hint is None or hint is type(None):
        if value is None:
            return None
        _fail(value, hint, name)
    if origin is typing.Literal:
        # type() equality too, so True does not pass for Literal[1].
        if any(value == a and type(value) is type(a) for a in typing.get_args(hint)):
            return value
        _fail(value, hint, name)
    if typing.is_typeddict(hint):
        return _typed_dict(value, hint, name)
    if origin is list or hint is list:
        if not isinstance(value, list):
            _fail(value, hint, name)
        args = typing.get_args(hint)
        if not args:
            return value
        return [_convert(item, args[0], f"{name}[{index}]") for index, item in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            _fail(value, hint, name)
        args = typing.get_args(hint)
        if not args:
            return value
        return {key: _convert(item, args[1], f"{name}.{key}") for key, item in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        _fail(value, hint, name)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        _fail(value, hint, name)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        _fail(value, hint, name)
    if hint is str:
        if isinstance(value, str):
            return value
        _fail(value, hint, name)
    if hint is datetime.datetime:
        if isinstance(value, str):
            return datetime.datetime.fromisoformat(value)
        _fail(value, hint, name)
    if hint is datetime.date:
        if isinstance(value, str):
            return datetime.date.fromisoformat(value)
        _fail(value, hint, name)
    if hint is decimal.Decimal:
        if isinstance(value, str | int) and not isinstance(value, bool):
            result = decimal.Decimal(value)
            if not result.is_finite():
                _fail(value, hint, name)
            return result
        if isinstance(value, float):
            return decimal.Decimal(repr(value))
        _fail(value, hint, name)
    if hint is uuid.UUID:
        if isinstance(value, str):
            return uuid.UUID(value)
        _fail(value, hint, name)
    raise TypeError(f"parameter '{name}': unsupported type hint {hint!r}")


def _typed_dict(value: Any, hint: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(value, hint, name)
    hints = typing.get_type_hints(hint)
    unknown = set(value) - set(hints)
    if unknown:
        raise ParamError(f"parameter '{name}': unknown key(s) {', '.join(sorted(unknown))}")
    missing = set(hint.__required_keys__) - set(value)
    if missing:
        raise ParamError(f"parameter '{name}': missing key(s) {', '.join(sorted(missing))}")
    return {key: _convert(item, hints[key], f"{name}.{key}") for key, item in value.items()}


@dataclass(frozen=True)
class Parameter:
    name: str
    hint: Any
    required: bool
    default: Any = None


def signature_of(func: Callable[..., Any]) -> list[Parameter]:
    """Parameters of a method after ``self``, with resolved type hints."""
    hints = typing.get_type_hints(func, include_extras=True)
    parameters: list[Parameter] = []
    for index, parameter in enumerate(inspect.signature(func).parameters.values()):
        if index == 0:
            continue  # self
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{func.__qualname__}: actions cannot take *args or **kwargs")
        required = parameter.default is parameter.empty
        parameters.append(
            Parameter(
                parameter.name,
                hints.get(parameter.name, Any),
                required,
                None if required else parameter.default,
            )
        )
    return parameters


def bind(parameters: list[Parameter], params: Any) -> list[Any]:
    """Positional arguments from the client's ``params`` (a list, or an object by name)."""
    if isinstance(params, dict):
        unknown = set(params) - {p.name for p in parameters}
        if unknown:
            raise ParamError(f"unknown parameter(s) {', '.join(sorted(unknown))}")
        values: list[Any] = []
        for parameter in parameters:
            if parameter.name in params:
                values.append(convert(params[parameter.name], parameter.hint, parameter.name))
            elif parameter.required:
                raise ParamError(f"missing parameter '{parameter.name}'")
            else:
                values.append(parameter.default)
        return values
    if not isinstance(params, list):
        raise ParamError("params must be a list")
    if len(params) > len(parameters):
        raise ParamError(f"expected at most {len(parameters)} parameter(s), got {len(params)}")
    missing = [p.name for p in parameters[len(params) :] if p.required]
    if missing:
        raise ParamError(f"missing parameter '{missing[0]}'")
    return [
        convert(value, parameter.hint, parameter.name)
        for value, parameter in zip(params, parameters, strict=False)
    ]
