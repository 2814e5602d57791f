"""The example refuses WebSockets opened by pages of other sites (Origin checking)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from browser_support import UNIT, ExampleServer


def login_token(server: ExampleServer, username: str) -> str:
    request = urllib.request.Request(
        f"{server.url}api/login/",
        data=json.dumps({"username": username, "password": "demo"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=UNIT) as response:
        return json.load(response)["token"]


def authenticate(url: str, origin: str | None, token: str) -> dict:
    # The synchronous client: the browser tests' Playwright keeps an event loop
    # running in this thread.
    with connect(url, origin=origin, open_timeout=UNIT) as ws:
        ws.send(json.dumps({"token": token}))
        return json.loads(ws.recv(timeout=UNIT))


def test_a_foreign_origin_is_refused_and_the_own_origin_accepted(server: ExampleServer):
    token = login_token(server, "alice")
    url = f"ws://127.0.0.1:{server.port}/ws/boards/"
    own = f"http://127.0.0.1:{server.port}"

    for origin in [
        "http://evil.example",
        f"http://evil.example:{server.port}",
        "https://127.0.0.1.evil.example",
        "null",
        None,  # no Origin header at all
    ]:
        with pytest.raises(InvalidStatus) as refused:
            authenticate(url, origin, token)
        assert refused.value.response.status_code == 403, origin
    for origin in [own, f"http://localhost:{server.port}"]:
        assert authenticate(url, origin, token) == {"type": "auth", "statusCode": 200}
