"""The Redis backend on a real Redis Cluster: found from any node, sharded fan-out, failover.

Each test starts its own cluster of six ``redis-server`` processes (three masters, one
replica each) with ``redis-cli --cluster create``; servers are uvicorn subprocesses whose
``REDIS_URL`` names a single node, as a deployment's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import websockets
from channels.db import database_sync_to_async as db
from django.db import connections
from redis_cluster import LocalRedisCluster

from rxdjango._backends.redis_keys import Keys
from rxdjango._backends.redis_store import RedisView
from rxdjango._relay import _relays
from rxdjango.testing import timeout

from jobs.channels import JobChannel
from jobs.models import Task
from jobs.serializers import JobSerializer
from support import (
    RedisTarget,
    SocketClient,
    connect,
    converges,
    expected_state,
    receive,
    reopen_like_a_browser,
    running_server,
    until,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.own_backend,
    pytest.mark.db_agnostic,
]

PREFIX = "rx"
CHANNEL_ID = f"{JobChannel.__module__}.{JobChannel.__qualname__}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    local = LocalRedisCluster(tmp_path / "cluster")
    local.start()
    yield local
    local.stop()


def rename(task_pk: int, title: str) -> None:
    task = Task.objects.get(pk=task_pk)
    task.title = title
    task.save()


def commands(port: int) -> dict[str, int]:
    """Calls of each command on one node so far."""
    stats = redis.Redis(port=port).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def converge_through_reloads(client: SocketClient, want) -> None:
    for _attempt in range(5):
        try:
            await converges(client.read, client.state, want)
            return
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4408
            await reopen_like_a_browser(client, attempts=5)
    await converges(client.read, client.state, want)


async def test_a_url_naming_any_node_serves_and_fans_out_on_one_shard(world, cluster, in_process):
    """Two servers, one given a master's URL and one a replica's, share the cache and
    the fan-out; frames go out with SPUBLISH on the shard of the channel, never with
    PUBLISH (which a cluster copies to every node)."""
    keys = Keys(PREFIX)
    anchors = {
        cluster.master_of(keys.meta((CHANNEL_ID, job.pk))) for job in (world.job, world.other_job)
    }
    replica = next(port for port in cluster.ports if port not in cluster.masters())
    first = RedisTarget(cluster.url(0), PREFIX)
    second = RedisTarget(f"redis://127.0.0.1:{replica}/0", PREFIX)
    with (
        running_server(first.server_env()) as one,
        running_server(second.server_env()) as two,
        first.settings(),
    ):
        clients = [
            SocketClient(f"{one}/ws/job/{world.job.pk}/", world.tokens["alice"]),
            SocketClient(f"{two}/ws/job/{world.job.pk}/", world.tokens["bob"]),
            SocketClient(f"{two}/ws/job/{world.other_job.pk}/", world.tokens["alice"]),
        ]
        for client in clients:
            await client.open()
        before = {port: commands(port) for port in cluster.masters()}
        await db(rename)(world.tasks[0].pk, "heard on every server")
        await db(Task.objects.create)(job=world.other_job, title="in the other anchor")
        for client, (job, user) in zip(
            clients,
            [(world.job, world.alice), (world.job, world.bob), (world.other_job, world.alice)],
            strict=True,
        ):
            want = await db(expected_state)(JobSerializer, job, user)
            await converges(client.read, client.state, lambda want=want: want)
        for client in clients:
            await client.close()
    after = {port: commands(port) for port in cluster.masters()}
    cached_on = {
        port for port in cluster.masters() if redis.Redis(port=port).keys(f"{PREFIX}:{{*}}:rec")
    }
    assert cached_on == anchors, "each anchor is cached on the master of its slot"
    channel_master = cluster.master_of(keys.pub(CHANNEL_ID))
    published = {
        port: after[port].get("spublish", 0) - before[port].get("spublish", 0)
        for port in cluster.masters()
    }
    assert published[channel_master] >= 2, published
    assert all(stats.get("publish", 0) == 0 for stats in after.values()), after


@pytest.mark.rx_errors_expected
async def test_a_killed_master_is_replaced_and_clients_resync_with_nothing_lost(
    world, cluster, in_process
):
    """The master serving the anchor's slot dies while a change is made; its replica
    takes over (with what it had replicated), every client reloads, and nothing is lost."""
    keys = Keys(PREFIX)
    doomed = cluster.master_of(keys.meta((CHANNEL_ID, world.job.pk)))
    survivor = next(port for port in cluster.masters() if port != doomed)
    target = RedisTarget(f"redis://127.0.0.1:{survivor}/0", PREFIX)
    with (
        running_server(target.server_env(RX_TEST_REDIS_HEARTBEAT="0.1")) as server,
        target.settings(),
    ):
        client = SocketClient(f"{server}/ws/job/{world.job.pk}/", world.tokens["alice"])
        await client.open()
        cluster.kill(doomed)
        await db(rename)(world.tasks[0].pk, "while the master was down")
        assert await client.close_code(20) == 4408
        cluster.wait_until_ok()
        assert doomed not in cluster.masters(), "a replica took over"
        await reopen_like_a_browser(client, attempts=5)
        want = await db(expected_state)(JobSerializer, world.job, world.alice)
        await converge_through_reloads(client, lambda: want)
        await db(rename)(world.tasks[1].pk, "after the failover")
        want = await db(expected_state)(JobSerializer, world.job, world.alice)
        await converge_through_reloads(client, lambda: want)
        titles = {t["id"]: t["title"] for t in client.state.tree()["tasks"]}
        assert titles[world.tasks[0].pk] == "while the master was down"
        assert titles[world.tasks[1].pk] == "after the failover"
        assert server.process.poll() is None, "the server process survived"
        await client.close()


async def test_a_write_whose_frames_were_never_published_makes_its_clients_reload(
    world, cluster, in_process, monkeypatch
):
    """On a cluster an anchor's write and its frames cannot share a transaction. A
    process that dies between the two leaves its change log rows behind; when they are
    propagated again the cache already holds the change (nothing to send), and the
    anchor's mark makes its clients reload instead of missing the change for good."""
    target = RedisTarget(cluster.url(0), PREFIX)
    path = f"/ws/job/{world.job.pk}/"
    with target.settings():
        from testproject.asgi import application

        client = await connect(application, path, world.tokens["alice"])
        # The relay thread stops; the process still relays, so each commit propagates
        # in the committing thread, the dying one (the relay could take the change).
        _relays["default"].stop()
        publish = RedisView.queue_frames

        died: list[str] = []

        def die_before_publishing(view: RedisView, pipe: object, emission: object) -> None:
            monkeypatch.setattr(RedisView, "queue_frames", publish)
            died.append(threading.current_thread().name)
            # Nothing of this propagation runs after this point (a BaseException: no
            # handler of the library's catches it, as none would run in a dead process).
            raise SystemExit("the process died between the write and its frames")

        monkeypatch.setattr(RedisView, "queue_frames", die_before_publishing)
        with contextlib.suppress(SystemExit):
            await db(rename)(world.tasks[0].pk, "written, never published")
        await until(lambda: bool(died))
        # Its log rows are left: the next commit's propagation takes them too.
        await db(rename)(world.tasks[1].pk, "the next change")
        assert await client.receive_close(5) == 4408
        seen = {t["id"]: t["title"] for t in client.state.tree()["tasks"]}
        assert seen[world.tasks[0].pk] != "written, never published", "no frame carried it"
        again = await connect(application, path, world.tokens["alice"])
        want = await db(expected_state)(JobSerializer, world.job, world.alice)
        assert again.state.tree() == want
        titles = {t["id"]: t["title"] for t in again.state.tree()["tasks"]}
        assert titles[world.tasks[0].pk] == "written, never published"
        await again.disconnect()


async def test_a_write_being_published_elsewhere_does_not_make_its_clients_reload(
    world, cluster, in_process
):
    """The ``unsent`` mark of an anchor is there from its write until its frames are
    out. A propagation that looks at the anchor before taking its lock (to group its
    changes) must not take a live holder's mark for a dead one's: it waits for the
    lock, and the anchor's clients are not made to reload."""
    target = RedisTarget(cluster.url(0), PREFIX)
    path = f"/ws/job/{world.job.pk}/"
    ref = (CHANNEL_ID, world.job.pk)
    with target.settings():
        from testproject.asgi import application

        client = await connect(application, path, world.tokens["alice"])
        # The relay thread stops: the commit below propagates in its own thread.
        _relays["default"].stop()
        keys = Keys(PREFIX)
        lock, wake = keys.lock(ref)
        node = redis.Redis(port=cluster.master_of(lock))
        # Another process holds the anchor, between its write and its frames.
        assert node.set(lock, "another process", nx=True, px=30_000)
        node.hset(keys.meta(ref), "unsent", "1")

        def rename_and_close() -> None:
            try:
                rename(world.tasks[1].pk, "after the holder")
            finally:
                connections.close_all()

        saving = threading.Thread(target=rename_and_close)
        saving.start()
        try:
            # The propagation has looked at the anchor and waits for its lock.
            await until(lambda: any("blpop" in c["cmd"] for c in node.client_list()))
            assert await client.receive_nothing(timeout(1)), "the clients were closed"
        finally:
            # The holder's frames are out: it clears the mark and lets go.
            node.hdel(keys.meta(ref), "unsent")
            node.delete(lock)
            node.lpush(wake, "1")
            await asyncio.to_thread(saving.join)
        want = await db(expected_state)(JobSerializer, world.job, world.alice)
        await converges(receive(client), client.state, lambda: want)
        await client.disconnect()
