"""Test helpers that speak the RxDjango protocol over a real ASGI WebSocket path.

    communicator = ChannelCommunicator(application, "/ws/job/1/", token=token.key)
    reply = await communicator.authenticate()
    state = await communicator.initial_state()
    assert state.tree() == expected

Timeouts derive from one unit, ``RX_TEST_TIMEOUT`` seconds (default 5), so a
slow machine can scale them without editing tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.testing import ApplicationCommunicator

from . import _codec, _propagation, _state_stream, _subtrees
from ._backends import current_backend, reset_backend
from ._capture import forget_capturing
from ._db_threads import stop_db_threads
from ._protocol import NOTIFICATION_TYPE, Operation, Reply
from ._relay import stop_relays
from .channels import ContextChannel

__all__ = [
    "ChannelCommunicator",
    "ClientState",
    "ConnectionClosed",
    "between_load_layers",
    "reset_state",
    "timeout",
    "while_propagating",
    "while_sending_state",
]


def timeout(units: float = 1.0) -> float:
    """``units`` test timeout units, in seconds."""
    return units * float(os.environ.get("RX_TEST_TIMEOUT", "5"))


def reset_state() -> None:
    """Forget all cached anchors (in Redis too); call between tests whose database is
    flushed; the database threads close their connections (a test database with
    connections open cannot be dropped)."""
    stop_relays()
    stop_db_threads()
    forget_capturing()
    backend = current_backend()
    if backend is not None:
        backend.forget_everything()
    reset_backend()


@contextlib.contextmanager
def between_load_layers(callback: Callable[[str], None]) -> Iterator[None]:
    """Call ``callback(instance_type)`` each time a load of this process has read one
    layer of a state tree, in the loading thread, before it reads the next.

    For tests of what a load does when changes commit in the middle of it: the
    callback may commit changes from another thread (or process) and wait for them.
    """
    _subtrees.layer_observers.append(callback)
    try:
        yield
    finally:
        _subtrees.layer_observers.remove(callback)


@contextlib.contextmanager
def while_propagating(callback: Callable[[tuple[str, Any]], None]) -> Iterator[None]:
    """Call ``callback((channel id, anchor pk))`` each time a propagation of this process
    is about to change a cached anchor, in the propagating thread, holding what orders
    that anchor's changes (on Redis, its lock), after it has read the rows it applies
    and before it writes anything.

    For tests of what waits on what: a callback that blocks holds that anchor's
    propagation (or the replay that ends its load) while others go on.
    """
    _propagation.propagation_observers.append(callback)
    try:
        yield
    finally:
        _propagation.propagation_observers.remove(callback)


@contextlib.contextmanager
def while_sending_state(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback()`` each time this process is about to read more of a client's
    initial state or catch-up: before the first record, then after each record sent.

    For tests of what a client receives when changes commit while its state is on the
    way (on Redis the state is read from the cache page by page as it is sent).
    """
    _state_stream.state_observers.append(callback)
    try:
        yield
    finally:
        _state_stream.state_observers.remove(callback)


class ClientState:
    """A reference client: applies frames as a browser would and rebuilds the tree.

    Used by tests to compare what a client holds with the serializer's output.
    """

    def __init__(self, channel: type[ContextChannel]) -> None:
        self.channel = channel
        self.state_model = channel.state_model()
        self.anchors: list[Any] = []
        self.records: dict[tuple[str, Any], dict[str, Any]] = {}
        self.end_markers = 0
        self.controls: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self._last_update: float | None = None
        self.received: list[dict[str, Any]] = []

    def apply(self, frame: Any) -> None:
        if isinstance(frame, dict):
            self.controls.append(frame)
            if frame.get("type") == Reply.INITIAL_ANCHORS:
                self.anchors = list(frame["anchorIds"])
            elif frame.get("type") == Reply.PREPEND_ANCHOR:
                self.anchors.insert(0, frame["anchorId"])
            elif frame.get("type") == Reply.APPEND_ANCHOR:
                self.anchors.append(frame["anchorId"])
            elif frame.get("type") == Reply.RESYNC:
                self._drop_anchor(frame["anchorId"])
            return
        root_type = self.state_model.root.instance_type
        for record in frame:
            operation = record.get("_operation")
            tstamp = record.get("_tstamp")
            if isinstance(tstamp, float) and (
                self._last_update is None or tstamp > self._last_update
            ):
                self._last_update = tstamp
            if operation == Operation.END_INITIAL_STATE:
                self.end_markers += 1
                continue
            if record.get("_instance_type") == NOTIFICATION_TYPE:
                self.notifications.append(record)
                continue
            self.received.append(record)
            key = (record["_instance_type"], record["id"])
            if operation == Operation.DELETE:
                self.records.pop(key, None)
                if key[0] == root_type and key[1] in self.anchors:
                    self.anchors.remove(key[1])
            elif operation == Operation.UPDATE:
                self.records.setdefault(key, {}).update(record)
            else:
                self.records[key] = dict(record)

    @property
    def last_update(self) -> float | None:
        """The highest ``_tstamp`` seen: what a reconnecting client sends as ``lastUpdate``."""
        return self._last_update

    def _drop_anchor(self, anchor: Any) -> None:
        """Forget every record reachable from ``anchor`` (on ``resync``)."""
        stack = [(self.state_model.root.instance_type, anchor)]
        while stack:
            key = stack.pop()
            record = self.records.pop(key, None)
            if record is None:
                continue
            for edge in self.state_model.layers[key[0]].edges:
                value = record.get(edge.name)
                children = value if isinstance(value, list) else [value]
                stack.extend((edge.child.instance_type, c) for c in children if c is not None)

    def dangling(self) -> list[tuple[tuple[str, Any], str, tuple[str, Any]]]:
        """References without a record: (holder key, field, missing key), for every record
        reachable from the anchors. :meth:`tree` leaves such ids out; a client that
        builds placeholders for them (as the original one does) would show them."""
        found = []
        seen: set[tuple[str, Any]] = set()
        stack = [(self.state_model.root.instance_type, anchor) for anchor in self.anchors]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            record = self.records.get(key)
            if record is None:
                continue
            for edge in self.state_model.layers[key[0]].edges:
                value = record.get(edge.name)
                children = value if isinstance(value, list) else [value]
                for child in children:
                    if child is None:
                        continue
                    child_key = (edge.child.instance_type, child)
                    if child_key not in self.records:
                        found.append((key, edge.name, child_key))
                    stack.append(child_key)
        return found

    def tree(self, anchor: Any = None) -> Any:
        """The nested state of ``anchor`` (of the only anchor if None)."""
        if anchor is None:
            if self.channel.many:
                return [self.tree(a) for a in self.anchors]
            anchor = self.anchors[0]
        return self._build(self.state_model.root.instance_type, anchor, set())

    def _build(self, instance_type: str, pk: Any, path: set[tuple[str, Any]]) -> Any:
        key = (instance_type, pk)
        record = self.records.get(key)
        if record is None or key in path:
            return None
        layer = self.state_model.layers[instance_type]
        # The record's own keys, as the serializer gave them (a field it skipped stays
        # absent, a key ``to_representation`` adds stays), without wire metadata; the id
        # every record carries only if the serializer has it.
        edges = {edge.name for edge in layer.edges}
        declares_id = "id" in layer.flat_serializer.fields
        result = {
            name: value
            for name, value in record.items()
            if not name.startswith("_") and name not in edges and (name != "id" or declares_id)
        }
        for edge in layer.edges:
            value = record.get(edge.name)
            child_type = edge.child.instance_type
            if edge.many:
                children = [self._build(child_type, c, path | {key}) for c in value or []]
                result[edge.name] = [c for c in children if c is not None]
            else:
                result[edge.name] = (
                    None if value is None else self._build(child_type, value, path | {key})
                )
        return result


class ChannelCommunicator(ApplicationCommunicator):
    """A WebSocket test client that knows the auth frame and the start sequence.

    It drives the ASGI application in-process, through the same consumer code a
    real server runs.
    """

    def __init__(
        self,
        application: Any,
        path: str,
        token: str | None = None,
        last_update: float | None = None,
        channel: type[ContextChannel] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        state: ClientState | None = None,
    ) -> None:
        path, _, query = path.partition("?")
        scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": headers or [],
            "subprotocols": [],
        }
        super().__init__(application, scope)
        self.token = token
        self.last_update = last_update
        self.state = state or (ClientState(channel) if channel is not None else None)
        self.close_code: int | None = None

    async def connect(self) -> bool:
        await self.send_input({"type": "websocket.connect"})
        message = await self.receive_output(timeout())
        return message["type"] == "websocket.accept"

    async def receive_frame(self, units: float = 1.0) -> Any:
        """The next text frame, decoded (and applied to ``state``)."""
        message = await self.receive_output(timeout(units))
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            raise ConnectionClosed(self.close_code)
        assert message["type"] == "websocket.send", message
        frame = _codec.decode(message.get("text") or message.get("bytes"))
        if self.state is not None:
            self.state.apply(frame)
        return frame

    async def receive_close(self, units: float = 1.0) -> int:
        """Wait for the server to close the socket; returns the close code."""
        while True:
            try:
                await self.receive_frame(units)
            except ConnectionClosed as closed:
                return closed.code

    async def send_frame(self, value: Any) -> None:
        text = value if isinstance(value, str) else _codec.encode(value)
        await self.send_input({"type": "websocket.receive", "text": text})

    async def authenticate(self) -> dict[str, Any]:
        """Connect, send the auth frame and return the auth reply."""
        assert await self.connect(), "the server refused the WebSocket handshake"
        await self.send_frame({"token": self.token, "lastUpdate": self.last_update})
        return await self.receive_frame()

    async def initial_state(self) -> ClientState:
        """Read frames until every initial anchor has sent its end marker."""
        assert self.state is not None, "pass channel= to track state"
        self.state.end_markers = 0
        seen_anchors = False
        while True:
            frame = await self.receive_frame()
            if isinstance(frame, dict) and frame.get("type") == Reply.INITIAL_ANCHORS:
                seen_anchors = True
            if seen_anchors and self.state.end_markers >= len(self.state.anchors):
                return self.state

    async def next_end_marker(self) -> ClientState:
        """Read until one more end marker (an anchor added after the start sequence)."""
        assert self.state is not None, "pass channel= to track state"
        target = self.state.end_markers + 1
        while self.state.end_markers < target:
            await self.receive_frame()
        return self.state

    async def receive_records(self, units: float = 1.0) -> list[dict[str, Any]]:
        """The next frame, which must be an array of instance records."""
        frame = await self.receive_frame(units)
        assert isinstance(frame, list), f"expected instance records, got {frame!r}"
        return frame

    async def nothing_more(self, units: float = 0.2) -> bool:
        """True if no frame arrives within ``units`` timeout units."""
        return await self.receive_nothing(timeout(units))

    async def disconnect(self, code: int = 1000) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout())


class ConnectionClosed(Exception):
    """The server closed the WebSocket."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed with code {code}")
        self.code = code
