"""Limits that protect the server from its clients (protocol §7), through a real server:
a client that stops reading is closed with 4408 instead of being buffered without
bound, and a client that floods is refused (429) and then closed with 4429. Other
clients of the same server are unaffected."""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest
import websockets
from channels.db import database_sync_to_async as db

from rxdjango.testing import timeout

from jobs.models import Task
from support import SocketClient, process_rss_kib, running_server

pytestmark = pytest.mark.django_db(transaction=True)

CHANGES = 1000


async def open_stalled_client(url: str, token: str) -> websockets.ClientConnection:
    """A client with a tiny kernel receive buffer; it reads its initial state, then
    stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    sock.connect((host, int(port)))
    sock.setblocking(False)
    # No permessage-deflate: repetitive frames would otherwise shrink to almost nothing.
    ws = await websockets.connect(
        url, sock=sock, max_size=2**21, ping_interval=None, compression=None
    )
    await ws.send(orjson.dumps({"token": token, "lastUpdate": None}).decode())
    while '"end_initial_state"' not in await asyncio.wait_for(ws.recv(), timeout()):
        pass
    return ws


async def rename_repeatedly(client: SocketClient, task_pk: int, prefix: str) -> None:
    """Ask the server (an action) to rename a task CHANGES times, one commit each."""
    call = {"callId": 1, "action": "rename_repeatedly", "params": [task_pk, CHANGES, prefix]}
    await client.ws.send(orjson.dumps(call).decode())


def renames_in(frame: str | bytes, prefix: str) -> int:
    decoded = orjson.loads(frame)
    if not isinstance(decoded, list):
        return 0
    return sum(1 for r in decoded if str(r.get("title", "")).startswith(prefix))


async def test_a_client_that_stops_reading_is_closed_and_others_get_every_change(world, capsys):
    env = {"RX_TEST_SEND_QUEUE_LIMIT": str(8 * 1024), "RX_TEST_RATE_LIMIT": "0"}
    with running_server(env, send_buffer=4096) as server:
        url = f"{server}/ws/job/{world.job.pk}/"
        stalled = await open_stalled_client(url, world.tokens["alice"])
        healthy = SocketClient(url, world.tokens["bob"])
        await healthy.open()
        task = world.tasks[0]
        prefix = "stream-"
        await rename_repeatedly(healthy, task.pk, prefix)
        last_title = f"{prefix}{CHANGES - 1:05d}".ljust(100, "-")
        # Every change reaches the client that reads, in order, while the other one stalls.
        titles = []
        deadline = time.monotonic() + timeout(30)
        while last_title not in titles:
            frame = await healthy.read(max(0.01, (deadline - time.monotonic()) / timeout()))
            if isinstance(frame, list):
                titles += [r["title"] for r in frame if str(r.get("title", "")).startswith(prefix)]
        assert titles == [f"{prefix}{i:05d}".ljust(100, "-") for i in range(CHANGES)]
        assert healthy.state.tree()["tasks"][0]["title"] == last_title

        # The stalled client now reads: what was already in flight, then the close.
        received = 0
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                received += renames_in(await asyncio.wait_for(stalled.recv(), timeout(5)), prefix)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
        assert received < CHANGES, "the server dropped the client instead of buffering it all"
        with capsys.disabled():
            print(f"\nslow client: closed with 4408 after {received} of {CHANGES} changes")

        # The server goes on serving: a new client gets the final state.
        late = SocketClient(url, world.tokens["alice"])
        await late.open()
        assert late.state.tree()["tasks"][0]["title"] == last_title
        await late.close()
        await healthy.close()
    assert await db(lambda: Task.objects.get(pk=task.pk).title)() == last_title


async def test_a_client_that_reads_late_gets_every_change_in_order(world):
    """Frames go out in the pass that queues them while the server's send completes;
    once the peer's buffers are full a send waits, and the frames after it queue behind
    it on a writer task. Nothing is lost or reordered across the two ways."""
    with running_server({"RX_TEST_RATE_LIMIT": "0"}, send_buffer=4096) as server:
        url = f"{server}/ws/job/{world.job.pk}/"
        late = await open_stalled_client(url, world.tokens["alice"])
        healthy = SocketClient(url, world.tokens["bob"])
        await healthy.open()
        task = world.tasks[0]
        prefix = "late-"
        await rename_repeatedly(healthy, task.pk, prefix)
        wanted = [f"{prefix}{i:05d}".ljust(100, "-") for i in range(CHANGES)]
        deadline = time.monotonic() + timeout(30)
        while healthy.state.tree()["tasks"][0]["title"] != wanted[-1]:
            await healthy.read(max(0.01, (deadline - time.monotonic()) / timeout()))
        # Every change is committed and sent to the one that reads; the other reads now.
        titles: list[str] = []
        while len(titles) < CHANGES:
            frame = orjson.loads(await asyncio.wait_for(late.recv(), timeout(5)))
            if isinstance(frame, list):
                titles += [r["title"] for r in frame if str(r.get("title", "")).startswith(prefix)]
        assert titles == wanted
        await late.close()
        await healthy.close()


async def test_a_flooding_client_is_refused_then_closed_and_others_are_served(world, capsys):
    with running_server({"RX_TEST_RATE_LIMIT": "20"}) as server:
        url = f"{server}/ws/job/{world.job.pk}/"
        flooder = SocketClient(url, world.tokens["alice"])
        await flooder.open()
        calm = SocketClient(url, world.tokens["bob"])
        await calm.open()

        # Under the limit: every call is answered.
        for call_id in range(1, 6):
            await calm.ws.send(
                orjson.dumps({"callId": call_id, "action": "count_tasks", "params": []}).decode()
            )
        answers = []
        while len(answers) < 5:
            frame = await calm.read()
            if isinstance(frame, dict) and frame.get("type") == "actionResponse":
                answers.append(frame)
        assert all(a["result"] == len(world.tasks) for a in answers)

        # Over twice the limit within a second: 429 errors, then close 4429.
        frame = orjson.dumps({"callId": 1, "action": "count_tasks", "params": []}).decode()
        for _ in range(100):
            await flooder.ws.send(frame)
        replies = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                replies.append(orjson.loads(await asyncio.wait_for(flooder.ws.recv(), timeout())))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        refused = [r for r in replies if r.get("type") == "error"]
        answered = [r for r in replies if r.get("type") == "actionResponse"]
        assert all(r["error"]["code"] == 429 for r in refused)
        # Closed once more than the limit's worth of frames was refused within a second;
        # the frames after the close are never handled.
        assert len(refused) >= 21
        assert answered and len(answered) + len(refused) < 100
        with capsys.disabled():
            print(f"\nflood: 100 frames, {len(answered)} handled, {len(refused)} refused, 4429")

        # The calm client is still served.
        await calm.ws.send(
            orjson.dumps({"callId": 99, "action": "count_tasks", "params": []}).decode()
        )
        while True:
            frame = await calm.read()
            if isinstance(frame, dict) and frame.get("callId") == 99:
                break
        assert frame["result"] == len(world.tasks)
        await calm.close()


def _a_large_job(world) -> int:
    """About 4 MB of state: 20,000 tasks with long titles under the world's job."""
    Task.objects.bulk_create(
        Task(job=world.job, title=f"{i:06d}".ljust(100, "x")) for i in range(20_000)
    )
    return world.job.pk


async def never_reading_client(url: str, token: str) -> websockets.ClientConnection:
    """A client that authenticates and then never reads: a tiny kernel buffer, and the
    websockets library stops reading the socket once one message waits for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    sock.connect((host, int(port)))
    sock.setblocking(False)
    ws = await websockets.connect(
        url, sock=sock, max_size=2**22, max_queue=1, ping_interval=None, compression=None
    )
    await ws.send(orjson.dumps({"token": token, "lastUpdate": None}).decode())
    return ws


@pytest.mark.own_backend
@pytest.mark.db_agnostic
@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_clients_that_never_read_their_initial_state_cost_bounded_memory(
    world, shared_redis, backend, capsys
):
    """40 sockets that authenticate on a 4 MB job and never read: each holds at most the
    send-queue limit plus one chunk, and each is closed with 4408."""
    count, limit, chunk = 40, 64 * 1024, 16 * 1024
    job_pk = await db(_a_large_job)(world)
    env = {
        "RX_TEST_SEND_QUEUE_LIMIT": str(limit),
        "RX_TEST_FRAME_SIZE": str(chunk),
        "RX_TEST_SEND_TIMEOUT": "3",
        "RX_TEST_MAX_CONNECTIONS_PER_USER": "0",
        "RX_TEST_RATE_LIMIT": "0",
    }
    if backend == "redis":
        env = shared_redis.server_env(**env)
    # A small kernel send buffer too, or the kernel would take the whole state off the
    # server's hands (the test of what the server itself holds).
    with running_server(env, send_buffer=4096) as server:
        url = f"{server}/ws/job/{job_pk}/"
        warm = SocketClient(url, world.tokens["alice"])  # the anchor is cached from now on
        warm.ws = await websockets.connect(url, max_size=2**24)
        await warm.ws.send(orjson.dumps({"token": world.tokens["alice"]}).decode())
        while '"end_initial_state"' not in await asyncio.wait_for(warm.ws.recv(), timeout(4)):
            pass
        state_size = 0
        baseline = process_rss_kib(server.process.pid)
        stalled = [await never_reading_client(url, world.tokens["bob"]) for _ in range(count)]
        peak = baseline
        deadline = time.monotonic() + timeout(4)
        while any(ws.close_code is None for ws in stalled) and time.monotonic() < deadline:
            peak = max(peak, process_rss_kib(server.process.pid))
            await asyncio.sleep(0.05)
        codes = []
        for ws in stalled:  # now read what was sent before the close, then the close
            try:
                while True:
                    state_size += len(await asyncio.wait_for(ws.recv(), timeout()))
            except websockets.ConnectionClosed as closed:
                codes.append(closed.rcvd.code if closed.rcvd else None)
        assert codes == [4408] * count
        growth = peak - baseline
        with capsys.disabled():
            print(
                f"\nnever-reading clients ({backend}): {count} on a 4 MB job, server RSS "
                f"{baseline / 1024:.1f} -> peak {peak / 1024:.1f} MiB; they received "
                f"{state_size / count / 1024:.0f} KiB each before the close"
            )
        # Without the bound each would hold its whole state (3 MB encoded, several times
        # that decoded: over 120 MB for 40); with it each holds the limit and a chunk,
        # plus its socket, a page of records read from the cache and allocator slack.
        # The process itself may grow by a fixed amount meanwhile, whatever the number
        # of clients: its database and executor threads serve them at once, and each
        # thread's allocator arena grows (measured: 24 MiB for 20 clients, 37 for 40).
        fixed = 16 * 1024 * 1024
        bound = (count * (limit + chunk + 1024 * 1024) + fixed) // 1024
        assert growth < bound, f"server memory grew by {growth / 1024:.1f} MiB"
        assert state_size < count * 4 * 1024 * 1024 / 4, "they received only part of it"
        await warm.ws.close()


def test_a_flood_taken_in_slowly_is_still_closed():
    """A busy server reads a flood more slowly than it was sent, so the bucket refills
    while it reads: counting the refusals of the whole flood still closes it, while a
    client that pauses for a second between bursts is only refused."""
    from rxdjango import _rate

    now = [1000.0]
    flood = _rate.RateLimit(10, clock=lambda: now[0])
    verdicts = []
    for _ in range(200):  # read at 15 frames a second: 5 refusals a second at most
        now[0] += 1 / 15
        verdicts.append(flood.check())
        if verdicts[-1] is _rate.Verdict.CLOSE:
            break
    assert verdicts[-1] is _rate.Verdict.CLOSE
    assert verdicts.count(_rate.Verdict.REFUSE) == 10  # the limit, then the close
    polite = _rate.RateLimit(10, clock=lambda: now[0])
    for _burst in range(5):
        burst = [polite.check() for _ in range(15)]  # 5 over the limit each time
        assert _rate.Verdict.CLOSE not in burst
        now[0] += 1.5  # then a quiet second and a half
