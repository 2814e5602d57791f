"""Prometheus metrics (rxdjango.metrics) scraped from real server processes while
changes flow, and summed over gunicorn's workers in multiprocess mode."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rxdjango.testing import timeout

from support import SocketClient, gunicorn, running_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.own_backend]


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, labels): value} of one scrape."""
    url = base.replace("ws://", "http://") + "/rxdjango/metrics/"
    with urllib.request.urlopen(url, timeout=timeout(1)) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_counters_move_while_changes_flow(world, shared_redis):
    path = f"/ws/job/{world.job.pk}/"
    with running_server(shared_redis.server_env()) as server:
        before = await asyncio.to_thread(scrape, server.url)
        assert value(before, "rxdjango_sockets_open") == 0
        client = SocketClient(f"{server}{path}", world.tokens["alice"])
        await client.open()
        # Five commits in the server process (an action), each propagated there.
        call = {"callId": 1, "action": "rename_repeatedly", "params": [world.tasks[0].pk, 5, "m"]}
        await client.ws.send(orjson.dumps(call).decode())
        await client.records_until(lambda r: r.get("title") == "m00004".ljust(100, "-"))
        after = await asyncio.to_thread(scrape, server.url)

        assert value(after, "rxdjango_sockets_open") == 1
        assert value(after, "rxdjango_anchors_watched") == 1
        assert value(after, "rxdjango_anchors_cached") == 1

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("rxdjango_propagation_seconds_count") >= 5
        assert moved("rxdjango_propagation_work_total", kind="flushes") >= 5
        # The initial state and five updates at least went out, and their bytes.
        assert moved("rxdjango_frames_sent_total") >= 6
        assert moved("rxdjango_bytes_sent_total") > 5 * 100

        await client.close()
        for _attempt in range(100):  # the server notices the close a moment later
            final = await asyncio.to_thread(scrape, server.url)
            if value(final, "rxdjango_sockets_open") == 0:
                break
            await asyncio.sleep(0.02)
        assert value(final, "rxdjango_sockets_open") == 0
        assert value(final, "rxdjango_anchors_watched") == 0


async def test_gunicorn_workers_report_one_sum(world, shared_redis, tmp_path):
    env = shared_redis.server_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    path = f"/ws/job/{world.job.pk}/"
    with gunicorn(env, workers=2) as (port, _master):
        base = f"ws://127.0.0.1:{port}"
        clients = [SocketClient(f"{base}{path}", world.tokens[name]) for name in ("alice", "bob")]
        clients += [SocketClient(f"{base}{path}", world.tokens["alice"])]
        for client in clients:
            await client.open()
        # Whichever worker answers a scrape, it counts the sockets of both.
        for _scrape in range(6):
            samples = await asyncio.to_thread(scrape, base)
            assert value(samples, "rxdjango_sockets_open") == 3
        for client in clients:
            await client.close()
