"""A protocol client for tests: one channel connection over a real WebSocket.

:class:`RxClient` holds what a browser would hold (a
:class:`rxdjango.testing.ClientState` kept current by a reader task) and sends action
calls and writes, waiting for their replies. ``rx_client`` (``pytest_plugin``) hands
them out connected to ``rx_live_server``; nothing here imports a model or reads a
setting until a client is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from rxdjango._protocol import Reply, Request

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from rxdjango.channels import ContextChannel
    from rxdjango.testing import ClientState

__all__ = [
    "ActionFailed",
    "AuthRefused",
    "RxClient",
    "WriteRefused",
]

#: Reply type -> (request kind, the reply's request id field).
_REPLIES: dict[str, tuple[Request, str]] = {
    Reply.ACTION_RESPONSE: (Request.ACTION, "callId"),
    Reply.WRITE_RESPONSE: (Request.WRITE, "writeId"),
}

#: What a record is matched with in ``RxClient.wait_for``: field values, or a predicate.
Match = Mapping[str, Any] | Callable[[dict[str, Any]], bool] | None


class AuthRefused(Exception):
    """The server refused the client: its reply to the auth frame was not a 200."""

    def __init__(self, reply: Any, close_code: int | None) -> None:
        super().__init__(f"refused with {reply!r}, closed with code {close_code}")
        self.reply = reply
        self.status: int | None = reply.get("statusCode") if isinstance(reply, dict) else None
        self.close_code = close_code


class ActionFailed(Exception):
    """An action call was answered with an error (``code`` and ``message`` as sent)."""

    def __init__(self, action: str, error: dict[str, Any]) -> None:
        super().__init__(f"action {action!r} failed: {error.get('code')} {error.get('message')}")
        self.code: int | None = error.get("code")
        self.message: str | None = error.get("message")


class WriteRefused(Exception):
    """A write was answered with ``success: false``; ``detail`` holds DRF's errors, if any."""

    def __init__(self, reply: dict[str, Any]) -> None:
        error = reply.get("error") or {}
        detail = f": {error['detail']!r}" if error.get("detail") else ""
        super().__init__(f"write refused: {error.get('code')} {error.get('message')}{detail}")
        self.reply = reply
        self.code: int | None = error.get("code")
        self.message: str | None = error.get("message")
        self.detail: Any = error.get("detail")


class RxClient:
    """One channel connection over a real WebSocket, as a browser holds it.

    A task reads every frame as it arrives and applies it to ``state`` (a
    :class:`rxdjango.testing.ClientState`), so the state is current whenever the test
    looks; the helpers send requests and wait for their replies on top of that.
    Every wait lasts at most ``timeout(units)`` seconds (:func:`rxdjango.testing.timeout`).
    """

    def __init__(
        self,
        url: str,
        channel: type[ContextChannel],
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        from rxdjango.testing import ClientState

        self.url = url
        self.channel = channel
        self.token = token
        self.headers = dict(headers or {})
        self.state: ClientState = ClientState(channel)
        #: The close code once the server (or ``close``) closed the socket.
        self.close_code: int | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._arrived = asyncio.Event()
        self._frames = 0
        self._ids = itertools.count(1)
        self._replies: dict[tuple[str, Any], asyncio.Future[dict[str, Any]]] = {}
        self._start: tuple[int, int] | None = None  # (end markers before, anchors sent)

    # -- connecting -------------------------------------------------------------------

    async def connect(self, units: float = 1.0) -> RxClient:
        """Open the socket, authenticate and wait for the whole initial state.

        Raises :class:`AuthRefused` if the server refuses. After a ``close`` (or a
        close by the server) this reconnects as a browser does, with the highest
        ``_tstamp`` seen as ``lastUpdate``, and waits for the catch-up.
        """
        from rxdjango import _codec

        if self._reader is not None and not self._reader.done():
            raise RuntimeError("the client is connected: close it first (or reconnect)")
        connect = _websocket_connect()
        await self.close()  # what is left of a previous connection
        deadline = deadline_in(units)
        self._ws = await connect(
            self.url,
            additional_headers=self.headers,
            max_size=None,  # browsers accept frames of any size
            open_timeout=_left(deadline),
            ping_interval=None,
        )
        self.close_code = None
        self._failure = None
        await self._ws.send(
            _codec.encode({"token": self.token, "lastUpdate": self.state.last_update})
        )
        reply = await self._first_frame(deadline)
        if reply != {"type": "auth", "statusCode": 200}:
            code = await self._close_code_after_refusal(deadline)
            raise AuthRefused(reply, code)
        self._start = (self.state.end_markers, -1)
        self._reader = asyncio.create_task(self._read(self._ws), name=f"rx_client {self.url}")
        await self._wait(self._started, _left(deadline) / seconds_per_unit(), "the initial state")
        return self

    async def reconnect(self, units: float = 1.0) -> RxClient:
        """Close the socket (if open) and connect again with ``lastUpdate``."""
        await self.close()
        return await self.connect(units)

    async def close(self) -> None:
        """Close the socket; replies still awaited fail with ``ConnectionClosed``."""
        if self._ws is not None:
            await self._ws.close()
        await self._stop_reading()

    async def wait_closed(self, units: float = 1.0) -> int:
        """Wait until the server closes the socket; returns the close code."""
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=seconds_per_unit() * units)
            if not self._reader.done():
                waited = seconds_per_unit() * units
                raise TimeoutError(f"the server did not close the socket in {waited:g} s")
        if self._failure is not None:
            raise self._failure
        return self.close_code or 1006

    # -- requests ---------------------------------------------------------------------

    async def send(self, frame: Any) -> None:
        """Send one frame as is (a JSON value, or a ready string)."""
        from rxdjango import _codec

        if self._ws is None:
            raise RuntimeError("the client is not connected")
        await self._ws.send(frame if isinstance(frame, str) else _codec.encode(frame))

    async def call(self, action: str, /, *args: Any, units: float = 1.0, **kwargs: Any) -> Any:
        """Call an ``@action`` of the channel and return its result.

        Positional arguments travel as a list, keyword arguments as an object (not
        both). Raises :class:`ActionFailed` if the server answers with an error. A
        parameter named ``units`` must be passed positionally.
        """
        if args and kwargs:
            raise TypeError("pass the parameters by position or by name, not both")
        call_id = next(self._ids)
        params = dict(kwargs) if kwargs else list(args)
        frame = {"type": Request.ACTION, "callId": call_id, "action": action, "params": params}
        reply = await self._request(Request.ACTION, call_id, frame, units, f"action {action!r}")
        if "error" in reply:
            raise ActionFailed(action, reply["error"])
        return reply.get("result")

    async def save(
        self,
        instance_type: type | str,
        instance_id: Any,
        data: Mapping[str, Any],
        *,
        units: float = 1.0,
    ) -> None:
        """Save ``data`` (some fields) to an instance; raises :class:`WriteRefused`.

        The writer's ``state`` holds the saved record when this returns: the server
        sends it before the reply.
        """
        frame = {
            "operation": "save",
            "instanceType": self.instance_type(instance_type),
            "instanceId": instance_id,
            "data": dict(data),
        }
        await self._write(frame, units)

    async def create(
        self,
        parent_type: type | str,
        parent_id: Any,
        relation: str,
        data: Mapping[str, Any],
        *,
        units: float = 1.0,
    ) -> Any:
        """Create a child of a parent through its ``relation`` (``"tasks"``); returns the
        new instance's id. Raises :class:`WriteRefused`."""
        parent = self.instance_type(parent_type)
        edge = next((e for e in self._layer(parent).edges if e.name == relation), None)
        if edge is None:
            raise ValueError(f"{parent} has no relation {relation!r} in {self.channel.__name__}")
        frame = {
            "operation": "create",
            "instanceType": edge.child.instance_type,
            "parentType": parent,
            "parentId": parent_id,
            "relationName": relation,
            "data": dict(data),
        }
        reply = await self._write(frame, units)
        return reply.get("instanceId")

    async def delete(
        self, instance_type: type | str, instance_id: Any, *, units: float = 1.0
    ) -> None:
        """Delete an instance; raises :class:`WriteRefused`."""
        frame = {
            "operation": "delete",
            "instanceType": self.instance_type(instance_type),
            "instanceId": instance_id,
        }
        await self._write(frame, units)

    # -- reading the state ------------------------------------------------------------

    def tree(self, anchor: Any = None) -> Any:
        """The nested state as the client holds it (see ``ClientState.tree``)."""
        return self.state.tree(anchor)

    def record(self, instance_type: type | str, instance_id: Any) -> dict[str, Any] | None:
        """The flat record the client holds for an instance, or None."""
        return self.state.records.get((self.instance_type(instance_type), instance_id))

    def records(self, instance_type: type | str) -> list[dict[str, Any]]:
        """Every flat record of one type the client holds."""
        name = self.instance_type(instance_type)
        return [record for (kind, _), record in self.state.records.items() if kind == name]

    def instance_type(self, serializer: type | str) -> str:
        """The wire name of a serializer class of this channel's state (a string is kept)."""
        if isinstance(serializer, str):
            return serializer
        for name, layer in self.state.state_model.layers.items():
            if layer.serializer_class is serializer:
                return name
        raise ValueError(f"{serializer.__name__} is not in the state of {self.channel.__name__}")

    async def wait_for(
        self, instance_type: type | str, match: Match = None, *, units: float = 1.0
    ) -> dict[str, Any]:
        """Wait until the client holds a record of ``instance_type`` that matches; return it.

        ``match`` is a mapping of field values (``{"id": 7, "title": "New"}``, values
        as they travel in JSON) or a predicate taking the record. A record the client
        already holds counts. Raises ``TimeoutError`` naming what the client holds.
        """
        name = self.instance_type(instance_type)
        check = _matcher(match)
        found: list[dict[str, Any]] = []

        def holds() -> bool:
            found[:] = [r for r in self.records(name) if check(r)]
            return bool(found)

        await self._wait(holds, units, f"a {name} record matching {_describe(match)}", name)
        return found[0]

    async def wait_until(self, condition: Callable[[], bool], *, units: float = 1.0) -> None:
        """Wait until ``condition()`` holds, checked now and after every frame.

        Raises ``TimeoutError``, or ``ConnectionClosed`` if the socket closes first.
        """
        name = getattr(condition, "__name__", repr(condition))
        await self._wait(condition, units, f"{name}() to hold")

    async def quiet(self, units: float = 0.2) -> bool:
        """True if no frame arrives within ``units`` timeout units."""
        frames = self._frames
        await asyncio.sleep(_left(deadline_in(units)))
        return self._frames == frames

    # -- internals --------------------------------------------------------------------

    async def _wait(
        self, condition: Callable[[], bool], units: float, what: str, kind: str | None = None
    ) -> None:
        """``wait_until``, with what a timeout says: ``what`` was awaited, and the records
        of type ``kind`` the client holds."""
        from rxdjango.testing import ConnectionClosed

        deadline = deadline_in(units)
        while not condition():
            if self._failure is not None:
                raise self._failure
            if self._reader is None or self._reader.done():
                raise ConnectionClosed(self.close_code or 1006)
            arrived = self._arrived
            try:
                await asyncio.wait_for(arrived.wait(), _left(deadline))
            except TimeoutError:
                if condition():
                    return
                raise TimeoutError(self._timeout_message(what, kind, units)) from None

    def _layer(self, name: str) -> Any:
        layer = self.state.state_model.layers.get(name)
        if layer is None:
            raise ValueError(f"{name} is not in the state of {self.channel.__name__}")
        return layer

    def _started(self) -> bool:
        """The start sequence is over: an end marker for every anchor ``initialAnchors``
        named since this connection's auth reply."""
        assert self._start is not None
        markers, anchors = self._start
        return anchors >= 0 and self.state.end_markers - markers >= anchors

    async def _write(self, frame: dict[str, Any], units: float) -> dict[str, Any]:
        write_id = next(self._ids)
        frame = {"type": Request.WRITE, "writeId": write_id, **frame}
        what = f"{frame['operation']} of {frame['instanceType']}"
        reply = await self._request(Request.WRITE, write_id, frame, units, what)
        if not reply.get("success"):
            raise WriteRefused(reply)
        return reply

    async def _request(
        self, kind: str, request_id: int, frame: dict[str, Any], units: float, what: str
    ) -> dict[str, Any]:
        """Send a frame with a request id and wait for the reply that carries it."""
        from rxdjango.testing import ConnectionClosed

        if self._reader is None or self._reader.done():
            raise ConnectionClosed(self.close_code or 1006)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[(kind, request_id)] = reply
        try:
            await self.send(frame)
            return await asyncio.wait_for(reply, seconds_per_unit() * units)
        except TimeoutError:
            waited = seconds_per_unit() * units
            raise TimeoutError(
                f"no reply to the {what} (request {request_id}) within {waited:g} s"
            ) from None
        finally:
            self._replies.pop((kind, request_id), None)

    async def _first_frame(self, deadline: float) -> Any:
        from websockets.exceptions import ConnectionClosed as SocketClosed

        from rxdjango import _codec

        assert self._ws is not None
        try:
            reply = _codec.decode(await asyncio.wait_for(self._ws.recv(), _left(deadline)))
        except SocketClosed:
            return None
        self.state.apply(reply)
        return reply

    async def _close_code_after_refusal(self, deadline: float) -> int | None:
        from websockets.exceptions import ConnectionClosed as SocketClosed

        assert self._ws is not None
        with contextlib.suppress(SocketClosed, TimeoutError):
            while True:
                await asyncio.wait_for(self._ws.recv(), _left(deadline))
        self.close_code = self._ws.close_code
        return self.close_code

    async def _read(self, ws: ClientConnection) -> None:
        """Apply every frame to ``state`` and hand replies to their requests."""
        from websockets.exceptions import ConnectionClosed as SocketClosed

        from rxdjango import _codec
        from rxdjango.testing import ConnectionClosed

        try:
            async for message in ws:
                frame = _codec.decode(message)
                self.state.apply(frame)
                if isinstance(frame, dict):
                    self._route(frame)
                self._frames += 1
                self._wake()
        except SocketClosed:
            pass
        except Exception as error:  # a frame the client cannot apply: waits raise it
            self._failure = error
        finally:
            self.close_code = ws.close_code or 1006
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_exception(self._failure or ConnectionClosed(self.close_code))
            self._wake()

    def _route(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == Reply.INITIAL_ANCHORS and self._start is not None and self._start[1] < 0:
            self._start = (self._start[0], len(frame.get("anchorIds") or []))
        request = _REPLIES.get(str(kind))
        if request is not None:
            reply = self._replies.get((request[0], frame.get(request[1])))
            if reply is not None and not reply.done():
                reply.set_result(frame)

    def _wake(self) -> None:
        """Wake every waiter (they check their condition again) and arm a new event."""
        self._arrived.set()
        self._arrived = asyncio.Event()

    async def _stop_reading(self) -> None:
        if self._reader is not None:
            if not self._reader.done():
                self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    def _timeout_message(self, what: str, kind: str | None, units: float) -> str:
        message = f"waited {seconds_per_unit() * units:g} s for {what}"
        if kind is not None:
            held = self.records(kind)
            message += f"; the client holds {len(held)} {kind} record(s): {held[:5]!r}"
            if len(held) > 5:
                message += " ..."
        return message

    def __repr__(self) -> str:
        return f"<RxClient {self.channel.__name__} {self.url}>"


# -- helpers ----------------------------------------------------------------------------


def seconds_per_unit() -> float:
    from rxdjango.testing import timeout

    return timeout()


def deadline_in(units: float) -> float:
    return time.monotonic() + seconds_per_unit() * units


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _matcher(match: Match) -> Callable[[dict[str, Any]], bool]:
    if match is None:
        return lambda record: True
    if callable(match):
        return match
    wanted = dict(match)
    return lambda record: all(name in record and record[name] == v for name, v in wanted.items())


def _describe(match: Match) -> str:
    if match is None:
        return "anything"
    if callable(match):
        return getattr(match, "__name__", repr(match))
    return repr(dict(match))


def _websocket_connect() -> Any:
    """``websockets``' asyncio client (an optional dependency, as uvicorn is)."""
    try:
        from websockets.asyncio.client import connect
    except ImportError:
        pytest.fail("rx_client needs websockets>=13 (pip install 'rxdjango[server]')")
    return connect
