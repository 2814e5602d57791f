"""Client calls to ``@action`` methods and channel-layer events to ``@consumer`` methods.

Everything a client names is looked up in registries built when the channel
class was created; no attribute is ever fetched by a name a client sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _codec
from ._params import ParamError, Parameter, bind, signature_of
from ._protocol import Reply, Request, Status, client_value, error_frame
from .actions import ACTION_ATTRIBUTE, ActionOptions
from .consumers import CONSUMER_ATTRIBUTE
from .exceptions import ChannelDeclarationError, ClientError

if TYPE_CHECKING:
    from ._contract import Channel

__all__ = [
    "ActionSpec",
    "Call",
    "call_refusal",
    "collect_actions",
    "collect_consumers",
    "is_call",
    "parse_call",
    "run_call",
]

logger = logging.getLogger("rxdjango")


@dataclass(frozen=True)
class ActionSpec:
    name: str
    detached: bool
    parameters: list[Parameter]


@dataclass(frozen=True)
class Call:
    call_id: int
    spec: ActionSpec
    args: list[Any]


def collect_actions(cls: type) -> dict[str, ActionSpec]:
    """Every ``@action`` method of ``cls`` and its bases, by name."""
    actions: dict[str, ActionSpec] = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            options = getattr(member, ACTION_ATTRIBUTE, None)
            if isinstance(options, ActionOptions):
                try:
                    parameters = signature_of(member)
                except (NameError, TypeError) as exc:
                    raise ChannelDeclarationError(
                        f"{cls.__qualname__}.{name}: cannot read the action's type hints ({exc})"
                    ) from exc
                actions[name] = ActionSpec(name, options.detached, parameters)
            elif name in actions:
                del actions[name]  # overridden without @action: no longer callable
    return actions


def collect_consumers(cls: type) -> dict[str, tuple[str, ...]]:
    """Event type → names of the ``@consumer`` methods handling it."""
    handlers: dict[str, list[str]] = {}
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            for event_type in getattr(member, CONSUMER_ATTRIBUTE, ()):
                names = handlers.setdefault(event_type, [])
                if name not in names:
                    names.append(name)
    return {event_type: tuple(names) for event_type, names in handlers.items()}


def is_call(frame: Any) -> bool:
    return isinstance(frame, dict) and ("action" in frame or frame.get("type") == Request.ACTION)


def call_refusal(call_id: int, code: int, message: str) -> dict[str, Any]:
    """An ``actionResponse`` carrying an error."""
    return {
        "type": Reply.ACTION_RESPONSE,
        "callId": call_id,
        "error": {"code": int(code), "message": message},
    }


def parse_call(frame: dict[str, Any], actions: Mapping[str, ActionSpec]) -> Call | dict[str, Any]:
    """A runnable call, or the frame to answer with (an error)."""
    call_id = frame.get("callId")
    if isinstance(call_id, bool) or not isinstance(call_id, int):
        return error_frame("an action call needs an integer callId")
    name = frame.get("action")
    spec = actions.get(name) if isinstance(name, str) else None
    if spec is None:
        return call_refusal(call_id, Status.FORBIDDEN, f"unknown action {client_value(name)}")
    try:
        args = bind(spec.parameters, frame.get("params", []))
    except ParamError as exc:
        return call_refusal(call_id, Status.BAD_REQUEST, str(exc))
    return Call(call_id, spec, args)


async def run_call(channel: Channel, call: Call) -> str:
    """Run the action and return the encoded reply; never raises (except cancellation)."""
    method = getattr(channel, call.spec.name)  # a registry name, never the client's string
    try:
        result = await method(*call.args)
    except ClientError as exc:  # ActionError, ForbiddenError, ...: the project's answer
        return _codec.encode(call_refusal(call.call_id, exc.status, exc.message))
    except Exception:
        logger.exception("rxdjango: action %s of %s raised", call.spec.name, type(channel).__name__)
        return _codec.encode(call_refusal(call.call_id, Status.SERVER_ERROR, "internal error"))
    try:
        return _codec.encode(
            {"type": Reply.ACTION_RESPONSE, "callId": call.call_id, "result": result}
        )
    except TypeError:
        logger.exception("rxdjango: result of action %s cannot be encoded", call.spec.name)
        return _codec.encode(
            call_refusal(call.call_id, Status.SERVER_ERROR, "the result could not be encoded")
        )
