"""The health endpoint (rxdjango.health) of real server processes, as a load balancer
polls it: ready only while the process can serve, and ready without any client."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import orjson
import pytest

from rxdjango.testing import timeout

from support import RedisTarget, SocketClient, running_server, until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.own_backend]


def get(url: str, method: str = "GET") -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout(1)) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as answered:
        body = answered.read()
        return answered.code, orjson.loads(body) if body.startswith(b"{") else {}


async def answer_becomes(url: str, want: int, units: float = 2) -> dict:
    """Poll like a load balancer until the endpoint answers ``want``; the last body."""
    deadline = time.monotonic() + timeout(units)
    while True:
        status, body = await asyncio.to_thread(get, url)
        if status == want:
            return body
        assert time.monotonic() < deadline, f"still {status} {body}, expected {want}"
        await asyncio.sleep(0.05)


async def test_a_redis_process_is_ready_without_clients_and_unready_while_redis_is_down(
    world, private_redis, in_process
):
    target = RedisTarget(private_redis.url, "rx")
    with running_server(target.server_env()) as server:
        health = server.url.replace("ws://", "http://") + "/rxdjango/health/"
        assert await answer_becomes(health, 200) == {"status": "ready"}
        # Ready means serving: this process relays the change log though no client
        # connected yet (it holds the relay lease, the only process that could).
        relay_lease = "rx:lease:{relay:default}"
        await until(lambda: bool(target.client().exists(relay_lease)))
        assert (await asyncio.to_thread(get, health, "POST"))[0] == 405

        private_redis.stop()
        body = await answer_becomes(health, 503)
        assert body == {"status": "unavailable", "reasons": ["Redis is unreachable"]}

        private_redis.start()
        assert await answer_becomes(health, 200, units=4) == {"status": "ready"}
        # And it serves again.
        client = SocketClient(f"{server}/ws/job/{world.job.pk}/", world.tokens["alice"])
        await client.open()
        assert [t["id"] for t in client.state.tree()["tasks"]] == [t.pk for t in world.tasks]
        await client.close()


async def test_an_embedded_process_is_ready_at_once(world, in_process):
    with running_server({"RX_TEST_BACKEND": "embedded"}) as server:
        health = server.url.replace("ws://", "http://") + "/rxdjango/health/"
        assert await asyncio.to_thread(get, health) == (200, {"status": "ready"})
