"""Convergence: whatever the writers do, at quiescence every client holds what the
database holds.

Hypothesis draws sequences of creates, renames, deletes, moves between jobs, M2M and
foreign-key changes, private notes, label renames and transactions that commit or
roll back. Two writer threads run them at once while three clients (two users, two
anchors) watch over real WebSockets; some reconnect at random moments, with
``lastUpdate`` or fresh; and while the writers run, new clients keep connecting right
after the cache of their job was cleared, so loads and reloads race the writes. After
the writers finish, every client's rebuilt tree must equal ``JobSerializer``'s output
read fresh from the database, with no id in a list that lacks its record, and no
client may ever have received another user's private note. A failure shrinks to a
minimal sequence.

On the embedded backend the server runs in this process (so the writers' commits
reach it); on Redis two uvicorn processes serve the clients and the writers publish
through Redis. ``RX_CONVERGENCE_EXAMPLES`` sets how many sequences run (``make soak``
runs more).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async as db
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, close_old_connections, connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import RedisError

from rxdjango import _codec
from rxdjango._backends.redis_keys import Keys
from rxdjango.testing import reset_state, timeout

from jobs.channels import JobChannel
from jobs.models import Job, Label, Note, Participant, Task
from jobs.serializers import JobSerializer
from support import (
    JOB,
    NOTE,
    RedisTarget,
    SocketClient,
    World,
    expected_state,
    running_server,
    server_in_this_process,
)

# The servers of these tests run on the backend each test chooses.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.own_backend]

EXAMPLES = int(os.environ.get("RX_CONVERGENCE_EXAMPLES", "24"))
TOTALS: dict[str, dict[str, int]] = {}

# -- operations ---------------------------------------------------------------------------

title = st.text(alphabet="abcxyz -", min_size=1, max_size=10)
slot = st.integers(0, 30)  # which existing task or note, modulo how many there are
job_index = st.integers(0, 2)  # job 2 is watched by newcomers only
change = st.one_of(
    st.tuples(st.just("create"), job_index, title),
    st.tuples(st.just("rename"), slot, title),
    st.tuples(st.just("toggle"), slot),
    st.tuples(st.just("delete"), slot),
    st.tuples(st.just("move"), slot, job_index),
    st.tuples(st.just("label"), slot, st.integers(0, 1), st.booleans()),
    st.tuples(st.just("developer"), slot, st.integers(-1, 1)),
    st.tuples(st.just("note"), job_index, st.integers(0, 1), title),
    st.tuples(st.just("unnote"), slot),
    st.tuples(st.just("relabel"), st.integers(0, 1), title),
)
operation = st.one_of(
    change,
    st.tuples(st.just("atomic"), st.lists(change, min_size=1, max_size=3), st.booleans()),
    st.tuples(st.just("reconnect"), st.integers(0, 2), st.booleans()),
)
sequences = st.lists(operation, min_size=5, max_size=30)


class _RollBack(Exception):
    """Raised inside ``transaction.atomic`` to roll the block back."""


@dataclass
class Scene:
    """What one sequence runs against: two fresh jobs of the world's project."""

    jobs: list[Job]
    participants: list[Participant]
    labels: list[Label]
    users: list[Any]
    reconnect: Callable[[int, bool], None]
    #: runs a named fault on the test's event loop and waits until it is done
    fault: Callable[[str], None] = lambda name: None
    counts: dict[str, int] = field(default_factory=dict)
    #: note id -> its owner's pk, for every note the writers created
    note_owners: dict[int, Any] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def _pick(queryset: Any, index: int) -> Any:
    rows = list(queryset.order_by("id"))
    if not rows:
        raise ObjectDoesNotExist
    return rows[index % len(rows)]


def apply_change(op: tuple, scene: Scene) -> None:
    kind, job_ids = op[0], [job.pk for job in scene.jobs]
    tasks = Task.objects.filter(job_id__in=job_ids)
    if kind == "create":
        Task.objects.create(job_id=job_ids[op[1]], title=op[2])
    elif kind == "rename":
        task = _pick(tasks, op[1])
        task.title = op[2]
        task.save()
    elif kind == "toggle":
        task = _pick(tasks, op[1])
        task.done = not task.done
        task.save()
    elif kind == "delete":
        _pick(tasks, op[1]).delete()
    elif kind == "move":
        task = _pick(tasks, op[1])
        task.job_id = job_ids[op[2]]
        task.save()
    elif kind == "label":
        task, label = _pick(tasks, op[1]), scene.labels[op[2]]
        (task.labels.add if op[3] else task.labels.remove)(label)
    elif kind == "developer":
        task = _pick(tasks, op[1])
        task.developer = None if op[2] < 0 else scene.participants[op[2]]
        task.save()
    elif kind == "note":
        note = Note.objects.create(job_id=job_ids[op[1]], owner=scene.users[op[2]], text=op[3])
        scene.note_owners[note.pk] = note.owner_id
    elif kind == "unnote":
        _pick(Note.objects.filter(job_id__in=job_ids), op[1]).delete()
    elif kind == "relabel":
        label = scene.labels[op[1]]
        label.name = op[2]
        label.save()
    scene.count("changes")


def run_operation(op: tuple, scene: Scene) -> None:
    try:
        if op[0] == "reconnect":
            scene.reconnect(op[1], op[2])
            scene.count("reconnects")
        elif op[0] == "fault":
            scene.fault(op[1])
            scene.count(f"fault: {op[1]}")
        elif op[0] == "atomic":
            try:
                with transaction.atomic():
                    for inner in op[1]:
                        apply_change(inner, scene)
                    if not op[2]:
                        raise _RollBack
                scene.count("committed transactions")
            except _RollBack:
                scene.count("rolled-back transactions")
        else:
            apply_change(op, scene)
    except (ObjectDoesNotExist, DatabaseError):
        # Nothing to pick, a row another writer just deleted, a lock conflict: the
        # database refused or skipped the change, which is fine as long as clients agree.
        scene.count("refused")


#: Longest pause of a writer between two operations, in seconds: writes arrive at the
#: pace of users (a few hundred per second), not back to back, so the clients that
#: keep arriving meanwhile load while changes commit.
THINK_TIME = 0.01


def writer(ops: list[tuple], scene: Scene, seed: int) -> None:
    """One writer thread: its share of the sequence, in order."""
    pace = random.Random(seed)
    try:
        for op in ops:
            run_operation(op, scene)
            time.sleep(pace.uniform(0, THINK_TIME))
    finally:
        connection.close()


# -- clients ------------------------------------------------------------------------------


@dataclass
class Watcher:
    """A browser: keeps reading, reconnects when asked or when the server drops it."""

    urls: Callable[[], list[str]]
    server_index: int
    job: Job
    user: Any
    token: str
    client: SocketClient | None = None
    task: asyncio.Task | None = None
    opened: int = 0
    #: While this holds (a fault the test made, e.g. Redis stopped), keep retrying.
    outage: Callable[[], bool] = lambda: False

    def url(self) -> str:
        urls = self.urls()
        return f"{urls[self.server_index % len(urls)]}/ws/job/{self.job.pk}/"

    async def open(self, fresh: bool) -> None:
        if self.client is None or fresh:
            self.client = SocketClient(self.url(), self.token)
        deadline = time.monotonic() + timeout(10)
        while True:
            try:
                await self.client.open(self.url())
                break
            except (OSError, websockets.WebSocketException, AssertionError, TimeoutError):
                # The server is restarting, or dropped us during the initial state.
                if self.outage():
                    deadline = time.monotonic() + timeout(10)
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        self.opened += 1
        self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        assert self.client is not None
        while True:
            try:
                raw = await self.client.ws.recv()
            except websockets.ConnectionClosed:
                await self.open(fresh=False)  # like a browser: reconnect with lastUpdate
                return
            self.client.state.apply(_codec.decode(raw))

    async def reconnect(self, fresh: bool) -> None:
        await self.stop()
        await self.open(fresh)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.client is not None and self.client.ws is not None:
            await self.client.close()

    def state(self) -> Any:
        """The rebuilt tree, or what is wrong with it: ids in lists without a record."""
        assert self.client is not None
        if not self.client.state.anchors:
            return None
        dangling = self.client.state.dangling()
        return {"dangling ids": dangling} if dangling else self.client.state.tree()

    def leaked_notes(self, note_owners: dict[int, Any]) -> list[Any]:
        """Private notes of other users this client ever received, or saw named in a
        job's list of notes (``note_owners``: who owns each note created). A list may
        name one of the user's own notes whose record never reached the client (deleted
        while it reconnected): that is the user's, not a leak."""
        assert self.client is not None
        own = {
            r["id"]
            for r in self.client.state.received
            if r.get("_instance_type") == NOTE and r.get("owner") == self.user.pk
        }
        leaked: list[Any] = [
            r
            for r in self.client.state.received
            if r.get("_instance_type") == NOTE and "owner" in r and r["owner"] != self.user.pk
        ]
        for r in self.client.state.received:
            if r.get("_instance_type") == JOB and "notes" in r:
                leaked.extend(
                    pk for pk in r["notes"] if pk not in own and note_owners.get(pk) != self.user.pk
                )
        return leaked


def fresh_jobs(world: World, index: int) -> list[Job]:
    jobs = [Job.objects.create(project=world.project, title=f"run {index} {n}") for n in (0, 1, 2)]
    for job in jobs:
        Task.objects.bulk_create(Task(job=job, title=f"seed {i}") for i in range(2))
    return jobs


async def run_sequence(
    world: World,
    urls: Callable[[], list[str]],
    ops: list[tuple],
    index: int,
    faults: dict[str, Callable[[], Awaitable[None]]] | None = None,
    outage: Callable[[], bool] = lambda: False,
) -> dict[str, int]:
    """Run ``ops`` with two writers (even and odd positions) while three clients watch;
    then check that every client holds the database's state. A ``("fault", name)``
    operation runs ``faults[name]`` on this loop while the other writer goes on; while
    ``outage()`` holds, clients keep trying to connect and no new client arrives."""
    jobs = await db(fresh_jobs)(world, index)
    participants = await db(lambda: list(Participant.objects.filter(project=world.project)))()
    watchers = [
        Watcher(urls, 0, jobs[0], world.alice, world.tokens["alice"], outage=outage),
        Watcher(urls, 1, jobs[0], world.bob, world.tokens["bob"], outage=outage),
        Watcher(urls, 2, jobs[1], world.alice, world.tokens["alice"], outage=outage),
    ]
    for watcher in watchers:
        await watcher.open(fresh=True)
    newcomers: dict[int, Watcher] = {}
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
    scene = Scene(
        jobs,
        participants,
        world.labels,
        [world.alice, world.bob],
        lambda i, fresh: loop.call_soon_threadsafe(requests.put_nowait, (i, fresh)),
    )

    async def arrivals(index: int) -> None:
        """While the writers run, new clients of job ``index`` keep arriving, each right
        after the job's cache was cleared: their loads (and the reloads of a watched job)
        race the writes. The newest arrival stays to the end."""
        while not done.done():
            if outage():
                await asyncio.sleep(0.05)
                continue
            previous = newcomers.pop(index, None)
            if previous is not None:
                await previous.stop()
            with contextlib.suppress(RedisError):  # the faults run stops Redis for a while
                await db(JobChannel.clear_cache)(jobs[index].pk)
            newcomer = Watcher(
                urls, index, jobs[index], world.alice, world.tokens["alice"], outage=outage
            )
            await newcomer.open(fresh=True)
            newcomers[index] = newcomer
            scene.count("newcomers")

    if faults:

        def fault(name: str) -> None:
            asyncio.run_coroutine_threadsafe(faults[name](), loop).result(timeout(30))

        scene.fault = fault
    writers = [
        sync_to_async(writer, thread_sensitive=False)(ops[w::2], scene, index * 2 + w)
        for w in range(2)
    ]
    done = asyncio.ensure_future(asyncio.gather(*writers))
    arriving = asyncio.gather(*(arrivals(index) for index in range(len(jobs))))
    while not (done.done() and requests.empty()):
        with contextlib.suppress(TimeoutError):
            which, fresh = await asyncio.wait_for(requests.get(), 0.05)
            await watchers[which].reconnect(fresh)
    await done
    await arriving
    clients = [*watchers, *newcomers.values()]

    def expected() -> list[Any]:
        return [
            expected_state(JobSerializer, Job.objects.get(pk=w.job.pk), w.user) for w in clients
        ]

    wanted = await db(expected)()
    deadline = time.monotonic() + timeout(20)
    while [w.state() for w in clients] != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    states = [w.state() for w in clients]
    for client in clients:
        await client.stop()
    for number, (state, want) in enumerate(zip(states, wanted, strict=True)):
        assert state == want, f"client {number} did not converge"
    for client in clients:
        assert not client.leaked_notes(scene.note_owners), "a private note reached another user"
    scene.counts["operations"] = len(ops)
    scene.counts["connections"] = sum(w.opened for w in clients)
    return scene.counts


def add_totals(name: str, counts: dict[str, int]) -> None:
    totals = TOTALS.setdefault(name, {"sequences": 0})
    totals["sequences"] += 1
    for key, value in counts.items():
        totals[key] = totals.get(key, 0) + value


def report(name: str, capsys: pytest.CaptureFixture) -> None:
    """Print what a run did, even under ``pytest -q``."""
    totals = TOTALS.pop(name, {})
    with capsys.disabled():
        print(f"\nconvergence ({name}): " + ", ".join(f"{k} {v}" for k, v in totals.items()))


PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def check_property(name: str, world: World, urls: Callable[[], list[str]]) -> None:
    """Run the drawn sequences against servers that stay up across examples."""
    numbers = itertools.count()

    @PROPERTY
    @given(ops=sequences)
    def converges(ops: list[tuple]) -> None:
        add_totals(name, asyncio.run(run_sequence(world, urls, ops, next(numbers))))

    converges()


def test_clients_converge_on_the_embedded_backend(world_sync, embedded_backend, capsys):
    from testproject.asgi import application

    with server_in_this_process(application) as url:
        check_property("embedded, 1 process", world_sync, lambda: [url])
    close_old_connections()
    report("embedded, 1 process", capsys)


def test_clients_converge_on_redis_with_two_server_processes(world_sync, shared_redis, capsys):
    env = shared_redis.server_env()
    with shared_redis.settings(), running_server(env) as one, running_server(env) as two:
        reset_state()
        try:
            check_property("Redis, 2 processes", world_sync, lambda: [one.url, two.url])
        finally:
            reset_state()
    report("Redis, 2 processes", capsys)


# -- faults -------------------------------------------------------------------------------


def seeded_changes(rng: random.Random, count: int) -> list[tuple]:
    """Reproducible changes and transactions of every kind the property test draws."""

    def word() -> str:
        return "".join(rng.choice("abcxyz") for _ in range(rng.randint(1, 8)))

    makers: list[Callable[[], tuple]] = [
        lambda: ("create", rng.randint(0, 1), word()),
        lambda: ("rename", rng.randint(0, 30), word()),
        lambda: ("toggle", rng.randint(0, 30)),
        lambda: ("delete", rng.randint(0, 30)),
        lambda: ("move", rng.randint(0, 30), rng.randint(0, 1)),
        lambda: ("label", rng.randint(0, 30), rng.randint(0, 1), rng.random() < 0.5),
        lambda: ("developer", rng.randint(0, 30), rng.randint(-1, 1)),
        lambda: ("note", rng.randint(0, 1), rng.randint(0, 1), word()),
        lambda: ("unnote", rng.randint(0, 30)),
        lambda: ("relabel", rng.randint(0, 1), word()),
    ]
    changes = []
    for _ in range(count):
        if rng.random() < 0.15:
            inner = [rng.choice(makers)() for _ in range(rng.randint(1, 3))]
            changes.append(("atomic", inner, rng.random() < 0.6))
        else:
            changes.append(rng.choice(makers)())
    return changes


def interleave(first: list[tuple], second: list[tuple]) -> list[tuple]:
    """One sequence whose even positions are ``first`` and odd positions ``second``."""
    return [op for pair in zip(first, second, strict=True) for op in pair]


@pytest.mark.rx_errors_expected  # changes committed while Redis is down fail to propagate
@pytest.mark.db_agnostic
def test_clients_converge_through_faults(world_sync, private_redis, tmp_path, capsys):
    """A server process killed mid-broadcast, a client killed mid-initial-load, Redis
    restarted mid-run and a loader killed during a cold load: no one intervenes, and
    afterwards every client holds the database's state."""
    target = RedisTarget(private_redis.url, "rx")
    blocker = tmp_path / "block-task-reads"
    env = target.server_env(RX_TEST_REDIS_HEARTBEAT="0.1", RX_TEST_LOAD_TIMEOUT="1")
    rng = random.Random(20261202)
    first = seeded_changes(rng, 120)
    second = seeded_changes(rng, 125)
    for position, name in [
        (20, "kill a server"),
        (40, "kill a client mid-load"),
        (60, "stop Redis"),
        (70, "start Redis"),
        (100, "kill a loader"),
    ]:
        first.insert(position, ("fault", name))
    ops = interleave(first, second)

    with contextlib.ExitStack() as stack, target.settings(RX_REDIS_HEARTBEAT=0.1):
        servers = [stack.enter_context(running_server(env)) for _ in range(2)]

        def restart(index: int) -> None:
            servers[index].process.send_signal(signal.SIGKILL)
            servers[index].process.wait(timeout())
            servers[index] = stack.enter_context(running_server(env))

        async def kill_a_server() -> None:
            restart(0)  # the other writer keeps committing meanwhile

        async def kill_a_client_mid_load() -> None:
            url = f"{servers[1].url}/ws/job/{world_sync.job.pk}/"
            ws = await websockets.connect(url)
            await ws.send(_codec.encode({"token": world_sync.tokens["alice"]}))
            await ws.recv()  # admitted; the initial state is on its way
            ws.transport.abort()

        redis_down: list[bool] = []

        async def stop_redis() -> None:
            redis_down.append(True)
            private_redis.stop()

        async def start_redis() -> None:
            private_redis.start()
            redis_down.clear()

        async def kill_a_loader() -> None:
            # A third server whose task reads hang while the blocker file exists: it
            # takes the cold anchor's load lease and is killed holding it.
            job = await db(Job.objects.create)(project=world_sync.project, title="cold")
            path = f"/ws/job/{job.pk}/"
            blocker.touch()
            doomed = stack.enter_context(
                running_server({**env, "RX_TEST_BLOCK_TASK_READS_WHILE": str(blocker)})
            )
            loading = SocketClient(f"{doomed.url}{path}", world_sync.tokens["alice"])
            opening = asyncio.ensure_future(loading.open())
            meta = target.client()
            deadline = time.monotonic() + timeout(5)
            meta_key = Keys("rx").meta((JobChannel.channel_id, job.pk))
            while meta.hget(meta_key, "status") != b"heating":
                assert time.monotonic() < deadline, "the cold load never started"
                await asyncio.sleep(0.02)
            doomed.process.send_signal(signal.SIGKILL)  # dies holding the load lease
            doomed.process.wait(timeout())
            opening.cancel()
            blocker.unlink()
            taker = SocketClient(f"{servers[1].url}{path}", world_sync.tokens["alice"])
            await taker.open()  # waits out the dead loader's lease, then loads
            want = await db(expected_state)(JobSerializer, job, world_sync.alice)
            assert taker.state.tree() == want
            await taker.close()

        faults = {
            "kill a server": kill_a_server,
            "kill a client mid-load": kill_a_client_mid_load,
            "stop Redis": stop_redis,
            "start Redis": start_redis,
            "kill a loader": kill_a_loader,
        }
        reset_state()
        try:
            counts = asyncio.run(
                run_sequence(
                    world_sync,
                    lambda: [s.url for s in servers],
                    ops,
                    0,
                    faults,
                    outage=lambda: bool(redis_down),
                )
            )
        finally:
            reset_state()
        for server in servers:
            assert server.process.poll() is None, "a server process did not survive"
    assert sum(v for k, v in counts.items() if k.startswith("fault:")) == 5
    add_totals("Redis, 2 processes, with faults", counts)
    report("Redis, 2 processes, with faults", capsys)
