"""The Redis backend across processes: fan-out, loading leases, expiry, catch-up, recovery.

Every test here runs on a real Redis whatever backend the rest of the suite
uses: the shared one at ``REDIS_URL_FOR_TESTS`` under a prefix of its own,
or, for the tests that flush or restart Redis, a private ``redis-server``.
Server processes are real uvicorn subprocesses on the test's database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import pytest
import redis
import websockets
from channels.db import database_sync_to_async as db
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test.utils import override_settings

from rxdjango._backends import get_backend
from rxdjango._backends.redis_backend import RedisBackend, redis_backend
from rxdjango.models import CapturedChange
from rxdjango.testing import between_load_layers, timeout

from jobs.channels import JobChannel
from jobs.models import Job, Project, Task
from jobs.serializers import JobSerializer
from support import (
    SHARED_REDIS,
    CountingConnection,
    RedisTarget,
    SocketClient,
    connect,
    converges,
    expected_state,
    job_state,
    receive,
    reopen_like_a_browser,
    run_command,
    running_server,
    type_name,
    until,
)

# The servers of these tests run on the backend each test chooses.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.own_backend]


def rename(task_pk: int, title: str) -> None:
    task = Task.objects.get(pk=task_pk)
    task.title = task.title if title is None else title
    task.save()


def titles(client) -> dict[int, str]:
    return {t["id"]: t["title"] for t in client.state.tree()["tasks"]}


# -- fan-out between processes ---------------------------------------------------------------


async def test_changes_from_any_process_reach_every_process_once(world, shared_redis, in_process):
    path = f"/ws/job/{world.job.pk}/"
    task = world.tasks[0].pk
    with (
        running_server(shared_redis.server_env()) as first,
        running_server(shared_redis.server_env()) as second,
        shared_redis.settings(),
    ):
        clients = [
            SocketClient(f"{first}{path}", world.tokens["alice"]),
            SocketClient(f"{first}{path}", world.tokens["bob"]),
            SocketClient(f"{second}{path}", world.tokens["alice"]),
        ]
        for client in clients:
            await client.open()
        # A change committed in this (third) process, then one in a management command.
        await db(rename)(task, "from the test process")
        await db(run_command)(
            "edit_task", str(task), "--title", "from a command", extra_env=shared_redis.server_env()
        )
        await db(rename)(world.tasks[1].pk, "sentinel")
        for client in clients:
            seen = await client.records_until(lambda r: r.get("title") == "sentinel")
            updates = [r.get("title") for r in seen if r["id"] == task]
            assert updates == ["from the test process", "from a command"], "once, in order"
            expected = await db(expected_state)(JobSerializer, world.job, _user(world, client))
            assert client.state.tree() == expected
            await client.close()


def _user(world, client):
    return world.alice if client.token == world.tokens["alice"] else world.bob


async def test_catch_up_across_processes_has_updates_and_deletes(world, shared_redis, in_process):
    path = f"/ws/job/{world.job.pk}/"
    with (
        running_server(shared_redis.server_env()) as first,
        running_server(shared_redis.server_env()) as second,
    ):
        client = SocketClient(f"{first}{path}", world.tokens["alice"])
        await client.open()
        await client.close()
        env = shared_redis.server_env()
        await db(run_command)("edit_task", str(world.tasks[0].pk), "--title", "away", extra_env=env)
        await db(run_command)("edit_task", str(world.tasks[2].pk), "--delete", extra_env=env)
        received = len(client.state.received)
        await client.open(f"{second}{path}")
        records = client.state.received[received:]
        assert not any(c.get("type") == "resync" for c in client.state.controls)
        operations = {(type_name(r), r["_operation"]) for r in records}
        assert ("TaskSerializer", "delete") in operations
        assert ("TaskSerializer", "initial_state") not in operations, "only what changed"
        expected = await db(expected_state)(JobSerializer, world.job, world.alice)
        assert client.state.tree() == expected
        await client.close()


# -- loading ----------------------------------------------------------------------------------


def test_concurrent_first_connects_load_once(world_sync, shared_redis, in_process):
    """Callers in two processes (two backends) arrive while one loads: one load in all."""
    world = world_sync
    started, release = threading.Event(), threading.Event()

    def slow_load(layer: str) -> None:
        started.set()
        release.wait(timeout())

    with shared_redis.settings(), between_load_layers(slow_load):
        backends = [redis_backend(get_backend().hub) for _ in range(2)]
        results: list = []

        def connect_one(backend: RedisBackend) -> None:
            results.append(backend.snapshot(JobChannel, world.job.pk))

        threads = [threading.Thread(target=connect_one, args=(backends[i % 2],)) for i in range(6)]
        for thread in threads:
            thread.start()
        assert started.wait(timeout())
        release.set()
        for thread in threads:
            thread.join(timeout(2))
        assert sum(b.loads for b in backends) == 1
        assert len(results) == 6
        keys = {frozenset(r.key for r in result.records()) for result in results}
        assert len(keys) == 1, "every caller streams the same records"
        for backend in backends:
            backend.close()
        assert isinstance(backends[0], RedisBackend)


async def test_a_killed_loader_does_not_make_others_wait_forever(
    world, shared_redis, in_process, tmp_path
):
    path = f"/ws/job/{world.job.pk}/"
    blocker = tmp_path / "block"
    blocker.touch()
    env = shared_redis.server_env(RX_TEST_LOAD_TIMEOUT="1")
    with running_server({**env, "RX_TEST_BLOCK_TASK_READS_WHILE": str(blocker)}) as doomed:
        first = SocketClient(f"{doomed}{path}", world.tokens["alice"])
        opening = asyncio.ensure_future(first.open())
        meta = shared_redis.client()
        keys = [k for k in meta.scan_iter(match=f"{shared_redis.prefix}:*:meta")]
        deadline = time.monotonic() + timeout(2)
        while not keys or meta.hget(keys[0], "status") != b"heating":
            assert time.monotonic() < deadline, "the first server never started loading"
            await asyncio.sleep(0.02)
            keys = [k for k in meta.scan_iter(match=f"{shared_redis.prefix}:*:meta")]
        doomed.process.send_signal(signal.SIGKILL)  # dies holding the load lease
        doomed.process.wait(timeout())
        opening.cancel()
    blocker.unlink()
    with running_server(env) as survivor, shared_redis.settings():
        client = SocketClient(f"{survivor}{path}", world.tokens["alice"])
        await client.open()  # waits out the dead loader's lease, then loads itself
        expected = await db(expected_state)(JobSerializer, world.job, world.alice)
        assert client.state.tree() == expected
        await db(rename)(world.tasks[0].pk, "live after the takeover")
        await client.records_until(lambda r: r.get("title") == "live after the takeover")
        await client.close()


# -- expiry -----------------------------------------------------------------------------------


async def test_idle_anchors_expire_without_a_cron_job(world, shared_redis, in_process, monkeypatch):
    # A TTL of zero: an unwatched anchor is due at once, so no test waits on the clock.
    monkeypatch.setattr(JobChannel.spec, "cache_ttl", 0)
    with shared_redis.settings():
        from testproject.asgi import application

        client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
        backend = get_backend()
        ref = (JobChannel.channel_id, world.job.pk)
        assert ref not in await db(backend.expire)(), "a watched anchor never expires"
        assert await db(backend.is_cached)(ref)
        await client.disconnect()
        task_key = ("jobs.serializers.TaskSerializer", world.tasks[0].pk)
        # The server's own sweep drops the anchor, then its index entries.
        await until(lambda: not backend.is_cached(ref) and ref not in backend.holders(task_key))


async def test_a_client_arriving_as_the_last_one_leaves_keeps_the_anchor_watched(
    world, shared_redis, in_process, monkeypatch
):
    """The last client of a process leaves and its watch lease is about to be released
    when a new client arrives and is served: the release must not land after the new
    client's lease, or the anchor counts as unwatched while served, and a clear (or the
    expiry sweep) drops it under that client, which then never hears of a change."""
    with shared_redis.settings():
        from testproject.asgi import application

        path_ = f"/ws/job/{world.job.pk}/"
        leaving = await connect(application, path_, world.tokens["alice"])
        backend = get_backend()
        loop = asyncio.get_running_loop()
        release, arrivals = backend._release, []

        def release_as_a_client_arrives(*args, **kwargs):
            # Decided to release; a client arrives now and is served if nothing orders it
            # after the release (then it waits, and the release goes first).
            arrival = asyncio.run_coroutine_threadsafe(
                connect(application, path_, world.tokens["alice"]), loop
            )
            arrivals.append(arrival)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                arrival.result(timeout(0.5))
            monkeypatch.setattr(backend, "_release", release)
            return release(*args, **kwargs)

        monkeypatch.setattr(backend, "_release", release_as_a_client_arrives)
        await leaving.disconnect()
        await until(lambda: bool(arrivals) and arrivals[0].done(), 3)
        arriving = arrivals[0].result()
        assert await db(JobChannel.clear_cache)(world.job.pk)
        await db(rename)(world.tasks[0].pk, "after the clear")
        await converges(receive(arriving), arriving.state, job_state(world))
        await arriving.disconnect()


def test_expire_command_lists_only_what_really_expires(world_sync, shared_redis, in_process):
    world = world_sync
    with shared_redis.settings(RX_CACHE_TTL=0):  # due at once unless watched
        backend = get_backend()
        idle, watched = world.job.pk, world.other_job.pk
        for pk in (idle, watched):
            backend.snapshot(JobChannel, pk)
        # Another process holds a live watch lease on one of them.
        watch_key = backend.keys.watch((JobChannel.channel_id, watched))
        backend.redis.zadd(watch_key, {"another-process": backend._now_ms() + 60_000})
        assert _listed("would expire", _command_output("--dry-run")) == [str(idle)]
        assert backend.is_cached((JobChannel.channel_id, idle)), "a dry run changes nothing"
        assert _listed("expired", _command_output()) == [str(idle)]
        assert not backend.is_cached((JobChannel.channel_id, idle))
        assert backend.is_cached((JobChannel.channel_id, watched))


def _listed(verb: str, output: str) -> list[str]:
    prefix = f"{verb} {JobChannel.channel_id} "
    return [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]


def _command_output(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("expire_rxdjango_cache", *args, stdout=out)
    return out.getvalue()


def test_expire_command_refuses_with_the_embedded_backend(embedded_backend):
    with pytest.raises(CommandError, match="REDIS_URL"):
        call_command("expire_rxdjango_cache", "--dry-run")


def test_a_save_nobody_loaded_writes_nothing_to_redis(world_sync, shared_redis, in_process):
    with shared_redis.settings():
        rename(world_sync.tasks[0].pk, "unwatched")
        assert list(shared_redis.client().scan_iter(match=f"{shared_redis.prefix}:*")) == []


# -- losing Redis data -------------------------------------------------------------------------


async def test_flushall_makes_clients_resync_and_nothing_is_lost(world, private_redis, in_process):
    target = RedisTarget(private_redis.url, "rx")
    path = f"/ws/job/{world.job.pk}/"
    with (
        running_server(target.server_env(RX_TEST_REDIS_HEARTBEAT="0.1")) as server,
        target.settings(),
    ):
        client = SocketClient(f"{server}{path}", world.tokens["alice"])
        await client.open()
        target.client().flushall()
        await db(rename)(world.tasks[0].pk, "after the flush")
        assert await client.close_code() == 4408
        await client.open()
        assert {"type": "resync", "anchorId": world.job.pk} in client.state.controls
        expected = await db(expected_state)(JobSerializer, world.job, world.alice)
        assert client.state.tree() == expected
        await client.close()


async def test_a_lost_pubsub_connection_makes_clients_catch_up(world, private_redis, in_process):
    """redis-py reconnects pub/sub by itself; what was published meanwhile is lost, so
    the clients of that process reconnect and catch up from the history."""
    target = RedisTarget(private_redis.url, "rx")
    path = f"/ws/job/{world.job.pk}/"
    with running_server(target.server_env()) as server, target.settings():
        client = SocketClient(f"{server}{path}", world.tokens["alice"])
        await client.open()
        target.client().client_kill_filter(_type="pubsub")
        assert await client.close_code() == 4408
        await db(rename)(world.tasks[0].pk, "while reconnecting")
        await client.open()
        assert not any(c.get("type") == "resync" for c in client.state.controls)
        # In the catch-up, or live right after it (the server relays the change).
        expected = await db(expected_state)(JobSerializer, world.job, world.alice)
        await converges(client.read, client.state, lambda: expected)
        assert titles(client)[world.tasks[0].pk] == "while reconnecting"
        await db(rename)(world.tasks[1].pk, "live again")
        await client.records_until(lambda r: r.get("title") == "live again")
        await client.close()


async def test_system_message_command_reaches_every_process(world, shared_redis, in_process):
    path = f"/ws/job/{world.job.pk}/"
    env = shared_redis.server_env()
    with running_server(env) as first, running_server(env) as second:
        clients = [SocketClient(f"{url}{path}", world.tokens["alice"]) for url in (first, second)]
        for client in clients:
            await client.open()
        await db(run_command)("broadcast_system_message", "going down", extra_env=env)
        for client in clients:
            message = await client.read()
            assert message == {"type": "system", "source": "system", "message": "going down"}
            await client.close()


@pytest.mark.rx_errors_expected
async def test_a_redis_restart_makes_clients_resync_and_nothing_is_lost(
    world, private_redis, in_process
):
    target = RedisTarget(private_redis.url, "rx")
    path = f"/ws/job/{world.job.pk}/"
    with (
        running_server(target.server_env(RX_TEST_REDIS_HEARTBEAT="0.1")) as server,
        target.settings(),
    ):
        client = SocketClient(f"{server}{path}", world.tokens["alice"])
        await client.open()
        private_redis.stop()
        await db(rename)(world.tasks[0].pk, "while Redis was down")  # cannot be propagated
        private_redis.start()
        assert await client.close_code(4) == 4408
        assert server.process.poll() is None, "the server process survived"
        await reopen_like_a_browser(client)
        assert {"type": "resync", "anchorId": world.job.pk} in client.state.controls
        assert titles(client)[world.tasks[0].pk] == "while Redis was down"
        await db(rename)(world.tasks[1].pk, "after the restart")
        expected = await db(expected_state)(JobSerializer, world.job, world.alice)
        for _attempt in range(3):
            # A client admitted while pub/sub was still reconnecting is closed with 4408
            # once it is back (it may have missed frames); like a browser, it reconnects.
            try:
                await converges(client.read, client.state, lambda: expected)
                break
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4408
                await reopen_like_a_browser(client)
        assert titles(client)[world.tasks[1].pk] == "after the restart"
        await client.close()


async def test_sentinel_through_a_client_factory(
    world, private_redis, in_process, tmp_path, monkeypatch
):
    """RX_REDIS_CLIENT: the backend reaches the primary that Sentinel names."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor rxprimary 127.0.0.1 {private_redis.port} 1\n"
    )
    sentinel = subprocess.Popen(
        [private_redis.binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL
    )
    try:
        monkeypatch.setenv("RX_TEST_SENTINEL", f"127.0.0.1:{port}")
        deadline = time.monotonic() + timeout(2)
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "sentinel did not start"
                await asyncio.sleep(0.02)
        with override_settings(
            REDIS_URL=None,
            RX_REDIS_CLIENT="jobs.redis_clients.sentinel_client",
            RX_REDIS_PREFIX="rx",
        ):
            from testproject.asgi import application

            client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
            await db(rename)(world.tasks[0].pk, "through sentinel")
            (update,) = await client.receive_records()
            assert update["title"] == "through sentinel"
            primary = redis.Redis.from_url(private_redis.url)
            assert list(primary.scan_iter(match="rx:{*}:rec")), "the cache lives on the primary"
            await client.disconnect()
    finally:
        sentinel.kill()
        sentinel.wait(timeout(1))


# -- cost -------------------------------------------------------------------------------------


async def test_redis_commands_per_change_do_not_grow_with_clients(world, shared_redis, in_process):
    """The same commands for a change watched by 1 client and by 200.

    Each is measured twice and the smaller count of each command kept: work on a
    clock (the relay's lease, the epoch check) lands in one window or another, work
    per client would land in both.
    """
    from testproject.asgi import application

    path = f"/ws/job/{world.job.pk}/"
    with shared_redis.settings(RX_REDIS_HEARTBEAT=3600, RX_MAX_CONNECTIONS_PER_USER=None):
        clients = [await connect(application, path, world.tokens["alice"])]
        await _commands_for_a_change(world, clients, "warm-up")  # Redis caches our scripts
        one = _fewest(
            [await _commands_for_a_change(world, clients, f"watched by one {n}") for n in (1, 2)]
        )
        for _ in range(199):
            clients.append(await connect(application, path, world.tokens["alice"]))
        many = _fewest(
            [await _commands_for_a_change(world, clients, f"watched by 200 {n}") for n in (1, 2)]
        )
        assert one == many, (one, many)
        for client in clients:
            await client.disconnect()


async def _commands_for_a_change(world, clients, title: str) -> dict[str, int]:
    monitor = redis.Redis.from_url(SHARED_REDIS)
    before = _command_counts(monitor)
    await db(rename)(world.tasks[0].pk, title)
    for client in clients:
        records = await client.receive_records()
        assert [r["title"] for r in records] == [title]
    after = _command_counts(monitor)
    monitor.close()
    return {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] != before.get(name, 0)
    }


def _fewest(measures: list[dict[str, int]]) -> dict[str, int]:
    """Per command, the smallest count among ``measures`` (0 where one lacks it)."""
    names = set().union(*measures)
    fewest = {name: min(m.get(name, 0) for m in measures) for name in names}
    return {name: count for name, count in fewest.items() if count}


def _command_counts(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name: int(value["calls"]) for name, value in stats.items() if name not in ("cmdstat_info",)
    }


async def test_a_heartbeat_costs_the_same_commands_for_one_connection_and_for_many(
    world, private_redis, in_process
):
    """Connection counting renews one lease per process, not one per connection.

    On a Redis of its own: ``INFO commandstats`` counts every client of the server."""
    from testproject.asgi import application

    path = f"/ws/job/{world.job.pk}/"
    target = RedisTarget(private_redis.url, "rx")
    with target.settings(RX_REDIS_HEARTBEAT=3600, RX_MAX_CONNECTIONS_PER_USER=None):
        backend = get_backend()
        clients = [await connect(application, path, world.tokens["alice"])]
        # The relay has propagated what building the world logged (its commands would
        # count in the first measure).
        await until(lambda: not CapturedChange.objects.exists(), units=2)
        await _commands_for_a_heartbeat(backend, target.url)  # Redis caches our scripts
        one = await _commands_for_a_heartbeat(backend, target.url)
        for _ in range(99):
            clients.append(await connect(application, path, world.tokens["bob"]))
        many = await _commands_for_a_heartbeat(backend, target.url)
        assert one == many, (one, many)
        for client in clients:
            await client.disconnect()


async def _commands_for_a_heartbeat(backend: RedisBackend, url: str) -> dict[str, int]:
    monitor = redis.Redis.from_url(url)
    before = _command_counts(monitor)
    await db(backend._heartbeat)()
    after = _command_counts(monitor)
    monitor.close()
    return {name: after[name] - before.get(name, 0) for name in after}


async def test_the_connections_of_a_process_that_died_stop_counting(world, shared_redis):
    env = shared_redis.server_env(
        RX_TEST_REDIS_HEARTBEAT="0.1", RX_TEST_MAX_CONNECTIONS_PER_USER="2"
    )
    path = f"/ws/job/{world.job.pk}/"
    with running_server(env) as doomed, running_server(env) as survivor:
        held = [SocketClient(f"{doomed}{path}", world.tokens["bob"]) for _ in range(2)]
        for client in held:
            await client.open()
        refused = SocketClient(f"{survivor}{path}", world.tokens["bob"])
        with pytest.raises(AssertionError, match="too-many-connections"):
            await refused.open()
        doomed.process.kill()  # no release, no goodbye: only its lease runs out
        doomed.process.wait(timeout(1))
        deadline = time.monotonic() + timeout(2)
        admitted = []
        while len(admitted) < 2:
            client = SocketClient(f"{survivor}{path}", world.tokens["bob"])
            try:
                await client.open()
                admitted.append(client)
            except AssertionError:
                assert time.monotonic() < deadline, "a dead process's sockets still count"
                await asyncio.sleep(0.05)
        third = SocketClient(f"{survivor}{path}", world.tokens["bob"])
        with pytest.raises(AssertionError, match="too-many-connections"):
            await third.open()
        for client in admitted:
            await client.close()


def rename_project(project_pk: int, name: str) -> None:
    project = Project.objects.get(pk=project_pk)
    project.name = name
    project.save()


async def _round_trips_of(change: Any) -> int:
    """Requests the library sends Redis while ``change`` commits and propagates (a
    pipeline or a transaction is one)."""
    before = CountingConnection.requests
    await db(change)()
    await until(lambda: not CapturedChange.objects.exists(), units=2)
    return CountingConnection.requests - before


async def test_round_trips_of_a_change_do_not_grow_with_the_anchors_it_reaches(
    world, shared_redis, in_process
):
    """A change held by eight hot anchors costs the round trips of one held by one: each
    step of a propagation is one pipeline for all the anchors it reaches.

    Counted by the connections of the library's Redis client (``RX_REDIS_CLIENT``); the
    fewest of three changes each, as a lease renewal may land in one."""
    from testproject.asgi import application

    with shared_redis.settings(
        RX_REDIS_HEARTBEAT=3600, RX_REDIS_CLIENT="support.counting_redis_client"
    ):
        jobs = [world.job]
        for n in range(7):
            jobs.append(await db(Job.objects.create)(project=world.project, title=f"job {n}"))
        clients = [await connect(application, f"/ws/job/{jobs[0].pk}/", world.tokens["alice"])]
        await until(lambda: not CapturedChange.objects.exists(), units=2)
        names = iter(range(100))

        async def fewest() -> int:
            rename = lambda: rename_project(world.project.pk, f"Apollo {next(names)}")  # noqa: E731
            return min([await _round_trips_of(rename) for _ in range(3)])

        one = await fewest()
        for job in jobs[1:]:
            clients.append(await connect(application, f"/ws/job/{job.pk}/", world.tokens["alice"]))
        eight = await fewest()
        received = [await client.receive_frame() for client in clients[1:]]
        for client in clients:
            await client.disconnect()
    assert eight == one, f"{one} round trips for one anchor, {eight} for eight"
    assert all("Apollo" in str(frame) for frame in received)


async def test_a_client_waiting_for_another_load_is_woken_instead_of_polling(
    world, shared_redis, in_process
):
    """A client that arrives while the anchor is being loaded waits until the load ends
    (woken through Redis, as another process's client would be), instead of asking
    again every few milliseconds: while the load is held for two seconds the waiting
    client's requests to Redis stay a handful. Its state is then the loaded one."""
    from testproject.asgi import application

    path = f"/ws/job/{world.job.pk}/"
    holding, release = threading.Event(), threading.Event()

    def hold_the_load(instance_type: str) -> None:
        if not holding.is_set():
            holding.set()
            release.wait(timeout(5))

    with shared_redis.settings(
        RX_REDIS_HEARTBEAT=3600, RX_REDIS_CLIENT="support.counting_redis_client"
    ):
        # Serving (a client of another job), and the relay has propagated what building
        # the world logged (its requests would count in the measure).
        elsewhere = await connect(
            application, f"/ws/job/{world.other_job.pk}/", world.tokens["alice"]
        )
        await until(lambda: not CapturedChange.objects.exists(), units=2)
        with between_load_layers(hold_the_load):
            loading = asyncio.create_task(connect(application, path, world.tokens["alice"]))
            assert await asyncio.to_thread(holding.wait, timeout(2))
            before = CountingConnection.requests
            waiting = asyncio.create_task(connect(application, path, world.tokens["bob"]))
            await asyncio.sleep(2)  # the window in which a polling waiter would ask ~15 times
            requests = CountingConnection.requests - before
            assert not waiting.done()
            release.set()
            clients = [await loading, await waiting]
            bobs_view = lambda: expected_state(JobSerializer, world.job, world.bob)  # noqa: E731
            await converges(receive(clients[1]), clients[1].state, bobs_view)
            for client in [*clients, elsewhere]:
                await client.disconnect()
    assert requests <= 10, f"{requests} requests while waiting two seconds for a load"
