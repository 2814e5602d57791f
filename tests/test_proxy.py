"""Serving behind nginx, through gunicorn's uvicorn worker: docs/production.md as written.

nginx (Debian's package) runs the documented site configuration, with only its
addresses filled in, in front of two gunicorn processes on the Redis backend. A
client connects through nginx and receives changes made through each process
directly, so one of them came from the process it is not connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import websockets

from rxdjango.testing import timeout

from support import TESTS_DIR, SocketClient, gunicorn

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.own_backend,
    pytest.mark.db_agnostic,
]

DOCS = TESTS_DIR.parent / "docs" / "production.md"
HOST = "app.example.com"  # the documented server_name, and the test's ALLOWED_HOSTS
ORIGIN = {"Origin": f"https://{HOST}"}


def documented_site(upstreams: list[int], port: int, read_timeout: str) -> str:
    """The nginx site of docs/production.md, listening on ``port`` in front of
    ``upstreams``, with ``read_timeout`` as proxy_read_timeout."""
    text = DOCS.read_text()
    match = re.search(r"```nginx\n(# /etc/nginx/conf\.d/myproject\.conf\n.*?)```", text, re.S)
    assert match, "docs/production.md has no nginx site configuration"
    site = match.group(1)
    replacements = {
        "server 127.0.0.1:8001;": f"server 127.0.0.1:{upstreams[0]};",
        "server 127.0.0.1:8002;": f"server 127.0.0.1:{upstreams[1]};",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "proxy_read_timeout 300s;": f"proxy_read_timeout {read_timeout};",
    }
    for documented, tested in replacements.items():
        assert site.count(documented) == 1, f"the documented site lost {documented!r}"
        site = site.replace(documented, tested)
    return site


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def nginx(site: str, port: int, directory: Path) -> Iterator[str]:
    """nginx in the foreground, as this user, serving ``site``; yields its ws:// URL."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert binary, "nginx is required (apt install nginx; .ci/services.sh installs it)"
    (directory / "site.conf").write_text(site)
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    (directory / "nginx.conf").write_text(
        f"""
daemon off;
master_process off;
pid {directory}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {directory}/site.conf;
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout(2)
        while True:
            assert process.poll() is None, f"nginx exited: {process.stderr.read()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout(2))


async def rename_through(url: str, token: str, task_pk: int, prefix: str) -> str:
    """Commit a rename of the task in the process serving ``url`` (an action); the title."""
    client = SocketClient(url, token, headers=ORIGIN)
    await client.open()
    call = {"callId": 1, "action": "rename_repeatedly", "params": [task_pk, 1, prefix]}
    await client.ws.send(orjson.dumps(call).decode())
    while True:
        frame = await client.read(2)
        if isinstance(frame, dict) and frame.get("type") == "actionResponse":
            assert frame == {"type": "actionResponse", "callId": 1, "result": 1}, frame
            break
    await client.close()
    return f"{prefix}00000".ljust(100, "-")


def http_status(url: str, host: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout(1)) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, b""


async def test_a_client_behind_nginx_gets_changes_made_through_either_process(
    world, shared_redis, tmp_path
):
    env = shared_redis.server_env(
        RX_TEST_ALLOWED_HOSTS=HOST,
        # uvicorn pings 4 times per proxy_read_timeout below, as 20 s pings do for 60 s+.
        RX_TEST_WS_PING_INTERVAL="0.5",
    )
    path = f"/ws/job/{world.job.pk}/"
    task = world.tasks[0].pk
    port = free_port()
    with gunicorn(env) as (first, first_master), gunicorn(env) as (second, _):
        site = documented_site([first, second], port, read_timeout="2s")
        with nginx(site, port, tmp_path) as proxy:
            client = SocketClient(f"{proxy}{path}", world.tokens["alice"], headers=ORIGIN)
            await client.open()
            assert [t["id"] for t in client.state.tree()["tasks"]] == [t.pk for t in world.tasks]

            # A change through each process: one of them is not the client's.
            for upstream, prefix in ((first, "via first "), (second, "via second ")):
                url = f"ws://127.0.0.1:{upstream}{path}"
                title = await rename_through(url, world.tokens["bob"], task, prefix)
                await client.records_until(lambda r, t=title: r.get("title") == t, units=3)

            # Idle for twice nginx's read timeout: uvicorn's pings keep the tunnel open.
            assert await client.quiet(units=4 / timeout())
            title = await rename_through(f"{proxy}{path}", world.tokens["bob"], task, "later ")
            await client.records_until(lambda r: r.get("title") == title)
            await client.close()

            # The Origin check holds behind the proxy: another site's page is refused.
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(
                    f"{proxy}{path}", additional_headers={"Origin": "https://evil.example"}
                )
            assert refused.value.response.status_code == 403

            # Host reaches Django as the browser sent it (ALLOWED_HOSTS checks it).
            page = proxy.replace("ws://", "http://") + "/api/request/"
            status, body = await asyncio.to_thread(http_status, page, HOST)
            assert (status, orjson.loads(body)) == (200, {"host": HOST})
            assert (await asyncio.to_thread(http_status, page, "other.example"))[0] == 400

            # So does the health check, for the proxy or the load balancer in front.
            health = proxy.replace("ws://", "http://") + "/rxdjango/health/"
            status, body = await asyncio.to_thread(http_status, health, HOST)
            assert (status, orjson.loads(body)) == (200, {"status": "ready"})

            # gunicorn's SIGTERM reaches the worker, which drains: its client is told to
            # reconnect at once (1012), and it does, through nginx, to the other process.
            client = SocketClient(
                f"ws://127.0.0.1:{first}{path}", world.tokens["alice"], headers=ORIGIN
            )
            await client.open()
            await client.ws.send('{"callId": 1, "action": "linger", "params": [0.5]}')
            # A call answered after it shows the server has the action running.
            await client.ws.send('{"callId": 2, "action": "count_tasks", "params": []}')
            while not any(c.get("callId") == 2 for c in client.state.controls):
                await client.read()
            first_master.send_signal(signal.SIGTERM)
            assert await client.close_code() == 1012
            # The action running at the signal was answered before the close.
            answer = {"type": "actionResponse", "callId": 1, "result": 0.5}
            assert client.state.controls[-1] == answer
            assert first_master.wait(timeout(3)) == 0
            await client.open(f"{proxy}{path}")
            title = await rename_through(f"{proxy}{path}", world.tokens["bob"], task, "after ")
            await client.records_until(lambda r: r.get("title") == title)
            await client.close()
