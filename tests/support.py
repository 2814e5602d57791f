"""Helpers shared by the tests: the job tree and protocol-speaking clients."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import websockets
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token

from rxdjango import _codec
from rxdjango._change import FlatRecord
from rxdjango.testing import ChannelCommunicator, ClientState, timeout

from jobs.channels import JobChannel
from jobs.models import (
    Asset,
    Deadline,
    Job,
    JobSpec,
    Label,
    Note,
    NoteComment,
    NoteReaction,
    Participant,
    Project,
    Task,
)
from jobs.serializers import JobSerializer

# Instance types of the test project's state, as they travel on the wire.
TASK = "jobs.serializers.TaskSerializer"
NOTE = "jobs.serializers.NoteSerializer"
JOB = "jobs.serializers.JobSerializer"
ASSET = "jobs.serializers.AssetSerializer"
LABEL = "jobs.serializers.LabelSerializer"
NOTE_COMMENT = "jobs.serializers.NoteCommentSerializer"
NOTE_REACTION = "jobs.serializers.NoteReactionSerializer"
#: The layers of the job tree that hold a user's private records (a note and below it).
PRIVATE_TYPES = (NOTE, NOTE_COMMENT, NOTE_REACTION)


@dataclass
class World:
    alice: Any
    bob: Any
    carol: Any
    tokens: dict[str, str]
    project: Project
    job: Job
    other_job: Job
    tasks: list[Task]
    labels: list[Label]


def build_world(task_count: int = 3) -> World:
    User = get_user_model()
    alice = User.objects.create_user("alice", password="x")
    bob = User.objects.create_user("bob", password="x")
    carol = User.objects.create_user("carol", password="x")
    tokens = {u.username: Token.objects.create(user=u).key for u in (alice, bob, carol)}
    project = Project.objects.create(name="Apollo")
    p_alice = Participant.objects.create(project=project, user=alice, role="lead")
    Participant.objects.create(project=project, user=bob)
    job = Job.objects.create(
        project=project,
        title="Launch",
        budget=decimal.Decimal("1234.50"),
        starts=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    )
    other_job = Job.objects.create(project=project, title="Landing")
    labels = [Label.objects.create(name=n) for n in ("urgent", "backend")]
    tasks = []
    for i in range(task_count):
        task = Task.objects.create(
            job=job, title=f"task {i}", developer=p_alice if i == 0 else None
        )
        tasks.append(task)
    if tasks:
        tasks[0].labels.add(labels[0])
    Asset.objects.create(job=job, name="blueprint")
    Deadline.objects.create(job=job, due=datetime.date(2026, 5, 1), label="beta")
    JobSpec.objects.create(job=job, text="go to the moon")
    for owner in (alice, bob):
        note = Note.objects.create(job=job, owner=owner, text=f"{owner.username} private")
        comment = NoteComment.objects.create(note=note, text=f"{owner.username} comment")
        NoteReaction.objects.create(comment=comment, emoji=f"{owner.username} reaction")
    return World(alice, bob, carol, tokens, project, job, other_job, tasks, labels)


def expected_state(serializer_class: type, instance: Any, user: Any = None) -> Any:
    """The serializer's output as JSON would carry it, private notes filtered to ``user``."""
    data = _codec.decode(_codec.encode(serializer_class(instance).data))
    if user is not None and "notes" in data:
        data["notes"] = [n for n in data["notes"] if n["owner"] == user.pk]
    return data


async def connect(application, path: str, token: str, channel=JobChannel, **kwargs):
    """A client that is authenticated and has read its whole initial state."""
    client = ChannelCommunicator(application, path, token=token, channel=channel, **kwargs)
    reply = await client.authenticate()
    assert reply == {"type": "auth", "statusCode": 200}, reply
    await client.initial_state()
    return client


def make_user(username: str, *, staff: bool = False, active: bool = True) -> tuple[Any, str]:
    User = get_user_model()
    user = User.objects.create_user(username, password="x", is_staff=staff, is_active=active)
    return user, Token.objects.create(user=user).key


async def records_until(client: ChannelCommunicator, predicate, units: float = 1.0) -> list[dict]:
    """Read record frames until one record satisfies ``predicate``; returns all read."""
    seen: list[dict] = []
    while True:
        frame = await client.receive_records(units)
        seen.extend(frame)
        if any(predicate(r) for r in frame):
            return seen


async def until(predicate: Callable[[], bool], units: float = 1.0) -> None:
    """Wait until ``predicate()`` (run in a thread: it may query Redis or the database)
    holds; fails after ``units`` test timeouts. For work another thread does later."""
    check = database_sync_to_async(predicate)
    deadline = time.monotonic() + timeout(units)
    while not await check():
        assert time.monotonic() < deadline, f"{predicate} never held"
        await asyncio.sleep(0.01)


def type_name(record: dict) -> str:
    return record["_instance_type"].rsplit(".", 1)[-1]


TESTS_DIR = Path(__file__).resolve().parent


def subprocess_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess of the test project on the test's database."""
    # A subprocess that hangs prints every thread's stack when the test aborts it.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(extra_env or {})}
    if connection.vendor == "postgresql":
        env["PGDATABASE"] = connection.settings_dict["NAME"]
    else:
        env["RX_SQLITE_NAME"] = str(connection.settings_dict["NAME"])
    return env


def run_command(*args: str, extra_env: dict[str, str] | None = None) -> str:
    """Run a management command of the test project in its own process; its output."""
    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "testproject.settings", **(extra_env or {})})
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=TESTS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(6),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def running_server(
    extra_env: dict[str, str] | None = None, send_buffer: int | None = None
) -> Iterator[ServerProcess]:
    """uvicorn serving the test project in a subprocess, on the test's database.

    Yields the server (``url`` is its ``ws://`` base URL); it is stopped on exit.
    ``send_buffer`` fixes the kernel send buffer of accepted sockets (no autotuning),
    so a client that stops reading backs up into the server quickly.
    """
    # The test binds and listens itself and hands the socket to uvicorn: connections
    # queue in the backlog until the server accepts them, so there is no port race
    # and nothing to poll for.
    listener = socket.create_server(("127.0.0.1", 0))
    # uvicorn wraps a passed descriptor as a Unix socket, so asyncio does not switch
    # Nagle's algorithm off; accepted sockets inherit it from the listener on Linux.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if send_buffer is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    port = listener.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "testproject.asgi:application",
            "--fd",
            str(listener.fileno()),
            "--log-level",
            "warning",
        ],
        cwd=TESTS_DIR,
        env=subprocess_env(extra_env),
        pass_fds=[listener.fileno()],
    )
    listener.close()  # the server process holds its own copy
    try:
        yield ServerProcess(f"ws://127.0.0.1:{port}", process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout(2))
            except subprocess.TimeoutExpired:  # it hangs: its threads' stacks, then fail
                process.send_signal(signal.SIGABRT)
                process.wait(5)
                raise


@contextlib.contextmanager
def gunicorn(env: dict[str, str], workers: int = 1) -> Iterator[tuple[int, subprocess.Popen]]:
    """The test project under gunicorn with the worker of docs/production.md; yields its
    port and the gunicorn master process."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "testproject.asgi:application",
            "-k",
            "testproject.workers.Worker",
            "--workers",
            str(workers),
            "--bind",
            f"fd://{listener.fileno()}",
            "--log-level",
            "warning",
        ],
        cwd=TESTS_DIR,
        env=subprocess_env(env),
        pass_fds=[listener.fileno()],
    )
    listener.close()  # the gunicorn master holds its own copy; connections queue meanwhile
    try:
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout(3))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


@contextlib.contextmanager
def server_in_this_process(application: Any) -> Iterator[str]:
    """uvicorn serving ``application`` on a thread of this process; yields its ws:// URL.

    For the embedded backend, whose changes reach only clients of the same process:
    writes made by the test then reach clients over real sockets.
    """
    import threading

    import uvicorn

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = uvicorn.Config(application, lifespan="off", log_level="warning", ws_ping_interval=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout(2)
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout(2))
        listener.close()


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen

    def __str__(self) -> str:
        return self.url


class SocketClient:
    """A protocol client over a real WebSocket, rebuilding state like a browser would."""

    def __init__(
        self,
        url: str,
        token: str | None,
        channel: type = JobChannel,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.headers = headers or {}
        self.state = ClientState(channel)
        self.ws: Any = None

    async def open(self, url: str | None = None) -> None:
        """Connect (again, with ``lastUpdate`` if state was received) and read the state
        up to the end marker."""
        self.url = url or self.url
        self.ws = await websockets.connect(
            self.url, max_size=2**21, additional_headers=self.headers
        )
        auth = {"token": self.token, "lastUpdate": self.state.last_update}
        await self.ws.send(_codec.encode(auth))
        reply = await self.read()
        assert reply == {"type": "auth", "statusCode": 200}, reply
        markers = self.state.end_markers
        while self.state.end_markers == markers:
            await self.read()

    async def read(self, units: float = 1.0) -> Any:
        frame = _codec.decode(await asyncio.wait_for(self.ws.recv(), timeout(units)))
        self.state.apply(frame)
        return frame

    async def records_until(self, predicate: Callable[[dict], bool], units: float = 2.0) -> list:
        """Records read until one satisfies ``predicate``."""
        seen: list[dict] = []
        deadline = time.monotonic() + timeout(units)
        while not any(predicate(r) for r in seen):
            frame = await self.read(max(0.01, (deadline - time.monotonic()) / timeout()))
            if isinstance(frame, list):
                seen.extend(frame)
        return seen

    async def close_code(self, units: float = 2.0) -> int:
        """Read (and apply) frames until the server closes the socket; the close code."""
        deadline = time.monotonic() + timeout(units)
        try:
            while True:
                await self.read(max(0.01, (deadline - time.monotonic()) / timeout()))
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code

    async def quiet(self, units: float = 0.2) -> bool:
        """True if no frame arrives within ``units`` timeout units (nothing is consumed
        otherwise: a frame that arrives is applied and makes this False)."""
        try:
            await self.read(units)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def reopen_like_a_browser(client: SocketClient, attempts: int = 3) -> None:
    """Reconnect; a client closed with 4408 while it loads (the server learnt of a Redis
    restart or failover from pub/sub and from the epoch one after the other) reconnects
    again, as a browser does."""
    for _attempt in range(attempts):
        try:
            await client.open()
            return
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4408
    await client.open()


SHARED_REDIS = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/0")


@dataclass
class RedisTarget:
    """A Redis (URL and key prefix) for the test process and its server subprocesses."""

    url: str
    prefix: str

    def settings(self, **extra: object) -> override_settings:
        return override_settings(REDIS_URL=self.url, RX_REDIS_PREFIX=self.prefix, **extra)

    def server_env(self, **extra: str) -> dict[str, str]:
        return {
            "RX_TEST_BACKEND": "redis",
            "REDIS_URL_FOR_TESTS": self.url,
            "RX_TEST_REDIS_PREFIX": self.prefix,
            **extra,
        }

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class CountingConnection(redis.Connection):
    """A Redis connection that counts the requests it sends (a pipeline is one)."""

    requests = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.requests += 1
        super().send_packed_command(command, check_health)


def counting_redis_client() -> redis.Redis:
    """``RX_REDIS_CLIENT`` for tests that count the library's round trips to the shared
    test Redis (use it with that Redis's prefix: ``shared_redis.settings``)."""
    return redis.Redis.from_url(SHARED_REDIS, connection_class=CountingConnection)


class PrivateRedis:
    """A redis-server of this test alone, that the test may flush, stop and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (apt install redis-server)"
        self.binary = binary
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout(2)
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout(1))


def run_harness(script: str, *args: str, units: float = 60) -> subprocess.CompletedProcess:
    """Run a harness under ``bench/`` in its own process, outside the test settings."""
    return subprocess.run(
        [sys.executable, str(TESTS_DIR.parent / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout(units),
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )


def _test_env(settings: dict[str, Any]) -> dict[str, str]:
    """The environment that makes a server subprocess use ``settings`` (RX_... names;
    tests/testproject/settings.py reads them back)."""
    env = {}
    for name, value in settings.items():
        assert name.startswith("RX_"), name
        env[f"RX_TEST_{name[3:]}"] = "0" if value is None else str(value)
    return env


@contextlib.contextmanager
def deployment(
    kind: str, shared_redis: RedisTarget | None = None, **settings: Any
) -> Iterator[list[str]]:
    """Servers of one kind of deployment, with ``settings``; yields their ws:// URLs.

    ``embedded``: uvicorn on a thread of this process, embedded backend (this process's
    commits reach it). ``redis``: two uvicorn processes on the Redis backend; this
    process commits and publishes through the same Redis.
    """
    from rxdjango.testing import reset_state

    from testproject.asgi import application

    if kind == "embedded":
        reset_state()
        with (
            override_settings(REDIS_URL=None, **settings),
            server_in_this_process(application) as url,
        ):
            yield [url]
        reset_state()
        return
    assert kind == "redis" and shared_redis is not None
    env = shared_redis.server_env(**_test_env(settings))
    with shared_redis.settings(**settings), running_server(env) as one, running_server(env) as two:
        reset_state()
        try:
            yield [one.url, two.url]
        finally:
            reset_state()


def process_rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def flat_record(
    kind: str, pk: Any, owner: Any = None, parents: Iterable[Any] = (), **fields: Any
) -> FlatRecord:
    """A record of ``JobChannel``'s state as the cache holds it, built by hand (tests of
    rendering and propagation without a database): ``fields`` name list and foreign-key
    children by id, ``parents`` are the keys holding it through a child-side relation."""
    layer = JobChannel.state_model().layers[kind]
    refs = []
    for edge in layer.edges:
        value = fields.get(edge.name)
        for child in value if isinstance(value, list) else [value]:
            if child is not None:
                refs.append((edge.child.instance_type, child))
    data = {"id": pk, "_instance_type": kind, **fields}
    return FlatRecord(
        (kind, pk), data, owner=owner, refs=refs, tstamp=1.0, parent_links=frozenset(parents)
    )


# -- convergence --------------------------------------------------------------------------


def problems(state: ClientState, want: Any) -> list[str]:
    """Why ``state`` is not ``want``: a different tree, or ids without records."""
    found = []
    if state.tree() != want:
        found.append(f"tree differs:\n got  {state.tree()}\n want {want}")
    dangling = state.dangling()
    if dangling:
        found.append(f"ids without records: {dangling}")
    return found


async def converges(read: Callable[[float], Any], state: ClientState, want: Callable) -> None:
    """Read frames until ``state`` holds ``want()`` and names nothing it lacks."""
    wanted = await database_sync_to_async(want)()
    deadline = time.monotonic() + timeout(3)
    while problems(state, wanted) and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await read(min(0.2, max(0.01, (deadline - time.monotonic()) / timeout())))
    assert not problems(state, wanted), problems(state, wanted)


def job_state(world: World) -> Callable[[], Any]:
    return lambda: expected_state(JobSerializer, Job.objects.get(pk=world.job.pk), world.alice)


def receive(client: ChannelCommunicator) -> Callable[[float], Any]:
    """Read one frame if one comes within ``units`` (a communicator's own timeout would
    cancel the connection)."""

    async def read(units: float) -> Any:
        if not await client.receive_nothing(timeout(units)):
            await client.receive_frame()

    return read
