"""The floor: the least a WebSocket server can do to fan a frame out.

Connections are kept in a set; a text frame ``fire:<marker>`` from any of them makes
the server send one pre-encoded frame (the size of an RxDjango update) to all.
"""

from __future__ import annotations

from typing import Any

PADDING = 160  # bytes of an RxDjango task-update frame, roughly

_connections: set[Any] = set()


async def floor_app(scope: dict, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    _connections.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text") or ""
            if text.startswith("fire:"):
                marker = text[5:]
                frame = f'[{{"marker":"{marker}","pad":"{"x" * PADDING}"}}]'
                for target in list(_connections):
                    await target({"type": "websocket.send", "text": frame})
    finally:
        _connections.discard(send)
