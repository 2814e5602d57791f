"""``make bench``: RxDjango beside DCRF, a DRF REST endpoint and a raw-WebSocket floor.

One run, one machine, two set-ups: a single uvicorn process serving all four
(SQLite, embedded defaults, in-memory channel layer), then two uvicorn processes
serving the same clients over PostgreSQL and Redis (RxDjango's Redis backend, DCRF on
channels_redis; the floor has no multi-process form). Client connections live in
separate processes (``clients.py``). Prints one table and writes
``bench/results/latest.json``. ``--smoke`` runs every scenario at toy sizes (``make
test`` does, to keep the harness working); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TESTS = ROOT / "tests"
TASK_TYPE = "jobs.serializers.TaskSerializer"
MARKER = re.compile(r"bench-(\d+)")
RESULTS = BENCH / "results" / "latest.json"


# -- statistics ------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "samples": len(ms)}


# -- the world -------------------------------------------------------------------------


@dataclass
class World:
    token: str
    small_job: int
    small_task: int
    big_jobs: list[int]
    big_tasks: int
    bulk_job: int
    bulk_tasks: int
    fanin_user: int
    fanin_jobs: list[int]


@dataclass
class Mode:
    """One set-up: how many server processes, on which database and backend."""

    name: str
    servers: int
    env: dict[str, str]
    kinds: tuple[str, ...]


def single_mode(scratch: Path) -> Mode:
    env = {
        "BENCH_MODE": "single",
        "BENCH_DB": str(scratch / "bench.sqlite3"),
        "RX_TEST_DB": "sqlite",
        "RX_TEST_BACKEND": "embedded",
    }
    return Mode("single process, SQLite, embedded", 1, env, ("floor", "rx", "dcrf", "dcrf_group"))


def multi_mode() -> Mode:
    env = {
        "BENCH_MODE": "multi",
        "RX_TEST_DB": "postgresql",
        "RX_TEST_BACKEND": "redis",
        "PGDATABASE": f"rxdjango_bench_{os.getpid()}",
        "RX_TEST_REDIS_PREFIX": f"rx-bench-{os.getpid()}",
    }
    return Mode("2 processes, PostgreSQL, Redis", 2, env, ("rx", "dcrf", "dcrf_group"))


def prepare_database(mode: Mode, big_tasks: int, bulk_tasks: int, fanin_jobs: int) -> World:
    done = subprocess.run(
        [sys.executable, str(BENCH / "world.py"), str(big_tasks), str(bulk_tasks), str(fanin_jobs)],
        env=child_env(mode),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"preparing the {mode.name} database failed:\n{done.stderr}")
    return World(**json.loads(done.stdout.splitlines()[-1]))


def drop_database(mode: Mode) -> None:
    if mode.env["BENCH_MODE"] != "multi":
        return
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{mode.env["PGDATABASE"]}" WITH (FORCE)')


def redis_client(mode: Mode) -> Any:
    """A Redis connection to count commands with (multi-process mode only)."""
    if mode.env["BENCH_MODE"] != "multi":
        return None
    import redis

    return redis.Redis.from_url(os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/0"))


def redis_commands(client: Any) -> dict[str, int]:
    """Calls per command since Redis started, without the INFO calls that read them."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


def forget_redis_keys(client: Any, mode: Mode) -> None:
    if client is None:
        return
    for key in client.scan_iter(match=f"{mode.env['RX_TEST_REDIS_PREFIX']}*", count=1000):
        client.delete(key)


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    base: str = ""

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def work(self) -> dict[str, int]:
        """The process's propagation counters (``rxdjango._metrics``)."""
        with urllib.request.urlopen(f"http://{self.base}/bench/work/", timeout=30) as response:
            return json.loads(response.read())


def child_env(mode: Mode) -> dict[str, str]:
    return {
        **os.environ,
        **mode.env,
        "PYTHONPATH": os.pathsep.join([str(BENCH), str(TESTS)]),
        "DJANGO_SETTINGS_MODULE": "benchproject.settings",
    }


def start_server(world: World, mode: Mode, peers: bool = True, deflate: bool = True) -> Server:
    """A server process of the bench project; without ``peers`` it serves RxDjango
    alone (DCRF's model observers, which serialize and publish on every save of a
    task whoever listens, are then not even imported). Without ``deflate`` it does
    not negotiate permessage-deflate (what ``docs/production.md`` advises for
    thousands of connections per process: ~50 KiB of zlib state each)."""
    # --port, not --fd: uvicorn takes a passed descriptor for a Unix socket, and asyncio
    # then leaves Nagle's algorithm on, which adds ~40 ms to every second small frame.
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    command = [sys.executable, "-m", "uvicorn", "benchproject.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--ws-max-size", str(2**24), "--backlog", "4096"]
    command += ["--ws-ping-interval", "600", "--ws-ping-timeout", "600"]  # no keepalive noise
    command += ["--ws-per-message-deflate", "true" if deflate else "false"]
    env = {**child_env(mode), "BENCH_PEERS": "all" if peers else "rx"}
    process = subprocess.Popen(command, env=env)
    server = Server(port, process, f"127.0.0.1:{port}")
    url = f"http://{server.base}/api/jobs/{world.small_job}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                return server
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.05)


# -- client processes ------------------------------------------------------------------


@dataclass
class Crowd:
    """Connections of one kind spread over several client processes."""

    workers: list[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def start(cls, kind: str, urls: list[str], count: int, options: dict, processes: int) -> Crowd:
        """``count`` connections in ``processes`` client processes, spread over ``urls``."""
        crowd = cls()
        processes = max(processes, len(urls))
        per = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
        for index, size in enumerate(per):
            if size:
                url = urls[index % len(urls)]
                crowd.workers.append(
                    subprocess.Popen(
                        [
                            *(sys.executable, str(BENCH / "clients.py"), kind, url),
                            *(str(size), json.dumps(options)),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
        for worker in crowd.workers:
            line = worker.stdout.readline()
            assert line and "ready" in line, f"a client process failed to connect: {line!r}"
        return crowd

    def collect(self, k: int, rows: int | None = None) -> tuple[list[float | None], list[float]]:
        """Receive times of change ``k`` per connection (with ``rows``: of its last
        record), and (RxDjango) times since commit."""
        for worker in self.workers:
            worker.stdin.write(json.dumps({"collect": k, "rows": rows}) + "\n")
            worker.stdin.flush()
        times: list[float | None] = []
        since_change: list[float] = []
        for worker in self.workers:
            answer = json.loads(worker.stdout.readline())
            times.extend(answer["times"])
            since_change.extend(answer["since_change"])
        return times, since_change

    def stop(self) -> None:
        for worker in self.workers:
            try:
                worker.stdin.write(json.dumps({"quit": True}) + "\n")
                worker.stdin.flush()
            except BrokenPipeError:
                pass
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()


_marker = 0


def next_marker() -> int:
    global _marker
    _marker += 1
    return _marker


async def open_rx(server: Server, world: World, job: int, tasks: list[int] | None = None) -> Any:
    """A client of ``job`` with its initial state read (its task ids into ``tasks``)."""
    ws = await websockets.connect(
        f"ws://{server.base}/ws/job/{job}/", max_size=2**25, ping_interval=None
    )
    await ws.send(json.dumps({"token": world.token, "lastUpdate": None}))
    while '"end_initial_state"' not in (text := await ws.recv()):
        if tasks is not None and isinstance(frame := json.loads(text), list):
            tasks += [r["id"] for r in frame if r.get("_instance_type") == TASK_TYPE]
    return ws


# -- scenarios ---------------------------------------------------------------------------


def work_since(
    servers: list[Server], before: list[dict[str, int]], changes: int
) -> dict[str, float]:
    """Propagation work per change, summed over the server processes."""
    after = [server.work() for server in servers]
    return {
        name: sum(a[name] - b[name] for a, b in zip(after, before, strict=True)) / changes
        for name in after[0]
    }


def redis_per_change(redis: Any, before: dict[str, int], changes: int) -> dict[str, float]:
    after = redis_commands(redis)
    calls = {name: (after[name] - before.get(name, 0)) / changes for name in after}
    return {name: per for name, per in sorted(calls.items()) if per}


async def fan_out(
    servers: list[Server],
    world: World,
    kind: str,
    n: int,
    reps: int,
    processes: int,
    redis: Any,
) -> dict:
    """One change to a task, to n clients: trigger → each client's receipt.

    RxDjango runs also count the work per change: SQL queries, serializations and
    encoded frames in the servers, and (on Redis) the Redis commands of every process.
    """
    paths = {
        "rx": f"/ws/job/{world.small_job}/",
        "dcrf": "/dcrf/tasks/",
        "dcrf_group": "/dcrf/task-group/",
        "floor": "/floor/",
    }
    urls = [f"ws://{server.base}{paths[kind]}" for server in servers]
    rss_before = sum(server.rss_kib() for server in servers)
    connecting = time.monotonic()
    crowd = Crowd.start(kind, urls, n, {"token": world.token, "task": world.small_task}, processes)
    connects_per_s = n / (time.monotonic() - connecting)
    rss_after = sum(server.rss_kib() for server in servers)
    if kind == "rx":
        trigger = await open_rx(servers[0], world, world.small_job)
    else:
        trigger = await websockets.connect(urls[0], max_size=2**25, ping_interval=None)
    last: list[float] = []
    each: list[float] = []
    from_commit: list[float] = []
    lost = 0
    failure = None
    work_before = [server.work() for server in servers]
    redis_before = redis_commands(redis) if redis is not None else {}
    try:
        for rep in range(reps):
            k = next_marker()
            title = f"bench-{k}"
            if kind == "rx":
                frame = {
                    "type": "write",
                    "writeId": rep + 1,
                    "operation": "save",
                    "instanceType": TASK_TYPE,
                    "instanceId": world.small_task,
                    "data": {"title": title},
                }
            elif kind in ("dcrf", "dcrf_group"):
                frame = {
                    "action": "patch",
                    "pk": world.small_task,
                    "data": {"title": title},
                    "request_id": rep + 1,
                }
            else:
                frame = None
            started = time.time()
            await trigger.send(json.dumps(frame) if frame is not None else f"fire:{title}")
            loop = asyncio.get_running_loop()
            times, since_change = await loop.run_in_executor(None, crowd.collect, k)
            from_commit.extend(since_change)
            arrived = [t - started for t in times if t is not None]
            lost += len(times) - len(arrived)
            each.extend(arrived)
            if arrived:
                last.append(max(arrived))
            await asyncio.sleep(0.05)
    except (websockets.ConnectionClosed, OSError, json.JSONDecodeError) as error:
        failure = f"stopped after {len(last)} of {reps} changes: {error!r}"
        progress(f"  {kind} at {n} clients failed: {failure}")
    cost = None
    if kind == "rx" and last:
        cost = work_since(servers, work_before, len(last))
        if redis is not None:
            cost["redis"] = redis_per_change(redis, redis_before, len(last))
    await trigger.close()
    crowd.stop()
    return {
        "kind": kind,
        "clients": n,
        "per_client": summary(each),
        "last_client": summary(last),
        "from_commit": summary(from_commit) if from_commit else None,
        "lost": lost,
        "failure": failure,
        "rss_per_connection_kib": (rss_after - rss_before) / n,
        # Each client connected and received the job's state.
        "connects_per_s": connects_per_s,
        "cost_per_change": cost,
    }


async def initial_state(server: Server, world: World, reps: int) -> dict:
    cold = []
    for job in world.big_jobs:
        started = time.perf_counter()
        ws = await open_rx(server, world, job)
        cold.append(time.perf_counter() - started)
        await ws.close()
    hot = []
    for _ in range(reps):
        started = time.perf_counter()
        ws = await open_rx(server, world, world.big_jobs[0])
        hot.append(time.perf_counter() - started)
        await ws.close()
    rest = []
    for _ in range(reps):
        started = time.perf_counter()
        url = f"http://{server.base}/api/jobs/{world.big_jobs[0]}/"
        with urllib.request.urlopen(url, timeout=120) as response:
            response.read()
        rest.append(time.perf_counter() - started)
    dcrf = []
    dcrf_url = f"ws://{server.base}/dcrf/jobs/"
    async with websockets.connect(dcrf_url, max_size=2**25, ping_interval=None) as ws:
        for request_id in range(reps):
            started = time.perf_counter()
            await ws.send(
                json.dumps(
                    {"action": "retrieve", "pk": world.big_jobs[0], "request_id": request_id}
                )
            )
            await ws.recv()
            dcrf.append(time.perf_counter() - started)
    return {
        "tasks": world.big_tasks,
        "rx_cold": summary(cold),
        "rx_hot": summary(hot),
        "rest": summary(rest),
        "dcrf_retrieve": summary(dcrf),
    }


async def write_round_trip(servers: list[Server], world: World, reps: int) -> dict:
    """The writer on the first server; the watcher on the last (another process, if any)."""
    writer = await open_rx(servers[0], world, world.small_job)
    watcher = await open_rx(servers[-1], world, world.small_job)
    replied, seen = [], []
    try:
        for write_id in range(1, reps + 1):
            title = f"bench-{next_marker()}"
            started = time.perf_counter()
            await writer.send(
                json.dumps(
                    {
                        "type": "write",
                        "writeId": write_id,
                        "operation": "save",
                        "instanceType": TASK_TYPE,
                        "instanceId": world.small_task,
                        "data": {"title": title},
                    }
                )
            )
            while f'"writeId":{write_id}' not in await writer.recv():
                pass
            replied.append(time.perf_counter() - started)
            while title not in await watcher.recv():
                pass
            seen.append(time.perf_counter() - started)
    finally:
        await writer.close()
        await watcher.close()
    return {"write_response": summary(replied), "other_client_sees_it": summary(seen)}


class WriteLoad:
    """Writers on one server process, one per job, and a watcher of each job (on the
    last process): write frames sent, replies matched by writeId, and when each
    watcher saw each marker."""

    def __init__(self) -> None:
        self.writers: list[tuple[Any, list[int]]] = []
        self.watchers: list[Any] = []
        self.replies: dict[int, asyncio.Future[dict]] = {}
        self.sent: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self.readers: list[asyncio.Task] = []
        self.write_ids = iter(range(1, 10**9))

    async def open(self, servers: list[Server], world: World, jobs: list[int]) -> None:
        for job in jobs:
            tasks: list[int] = []
            self.writers.append((await open_rx(servers[0], world, job, tasks), tasks))
            self.watchers.append(await open_rx(servers[-1], world, job))
        self.readers = [asyncio.create_task(self._replies(ws)) for ws, _ in self.writers]
        self.readers += [asyncio.create_task(self._markers(ws)) for ws in self.watchers]

    async def _replies(self, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                if '"writeResponse"' in text:
                    reply = json.loads(text)
                    future = self.replies.pop(reply["writeId"], None)
                    if future is not None and not future.done():
                        future.set_result(reply)

    async def _markers(self, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                now = time.perf_counter()
                for match in MARKER.finditer(text):
                    self.seen.setdefault(int(match.group(1)), now)

    async def write(self, writer: int) -> tuple[int, asyncio.Future[dict]]:
        """Send one save of a task of writer ``writer``'s job: its marker, and its reply
        when it comes."""
        ws, tasks = self.writers[writer]
        write_id = next(self.write_ids)
        k = next_marker()
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.replies[write_id] = future
        self.sent[k] = time.perf_counter()
        frame = {
            "type": "write",
            "writeId": write_id,
            "operation": "save",
            "instanceType": TASK_TYPE,
            "instanceId": tasks[k % len(tasks)],
            "data": {"title": f"bench-{k}"},
        }
        await ws.send(json.dumps(frame))
        return k, future

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        for ws in [ws for ws, _ in self.writers] + self.watchers:
            await ws.close()


async def closed_loop(load: WriteLoad, seconds: float) -> dict:
    """Each writer sends its next write when the last one is answered: the capacity."""
    ok = refused = 0
    end = time.perf_counter() + seconds

    async def writer(n: int) -> None:
        nonlocal ok, refused
        while time.perf_counter() < end:
            _, future = await load.write(n)
            reply = await asyncio.wait_for(future, 60)
            if reply["success"]:
                ok += 1
            else:  # "send it again later", as a client would
                refused += 1
                await asyncio.sleep(0.05)

    started = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(len(load.writers))))
    took = time.perf_counter() - started
    return {"writes_per_s": ok / took, "refused": refused, "seconds": took}


async def open_loop(load: WriteLoad, rate: float, seconds: float) -> dict:
    """Writes offered at ``rate`` per second whatever the replies: write → watcher, and
    how many were refused (503 or 429) instead of queued."""
    markers: dict[asyncio.Future[dict], int] = {}
    started = time.perf_counter()
    count = int(rate * seconds)
    for n in range(count):
        due = started + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        k, future = await load.write(n % len(load.writers))
        markers[future] = k
    done, pending = await asyncio.wait(markers, timeout=60)
    replies = [f.result() for f in done]
    accepted = [markers[f] for f in done if f.result()["success"]]
    deadline = time.perf_counter() + 30
    while any(k not in load.seen for k in accepted) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    latency = [load.seen[k] - load.sent[k] for k in accepted if k in load.seen]
    codes: dict[str, int] = {}
    for reply in replies:
        if not reply["success"]:
            code = str(reply["error"]["code"])
            codes[code] = codes.get(code, 0) + 1
    return {
        "offered_per_s": rate,
        "writes": count,
        "accepted": len(accepted),
        "refused": codes,
        "unanswered": len(pending),
        "not_seen": len(accepted) - len(latency),
        "write_to_client": summary(latency) if latency else None,
    }


async def sustained_writes(
    servers: list[Server], world: World, writers: int, seconds: float
) -> dict:
    """Write frames from ``writers`` connections to one process (one job each, another
    client watching each job): the capacity, write → client at 80% of it, and at twice
    it (refused at once instead of queued)."""
    load = WriteLoad()
    await load.open(servers, world, world.fanin_jobs[:writers])
    try:
        progress(f"{writers} writers as fast as replies come, {seconds:g} s")
        cpu = [server.cpu_seconds() for server in servers]
        capacity = await closed_loop(load, seconds)
        writes = capacity["writes_per_s"] * capacity["seconds"]
        # CPU per accepted write of the process written to (its refusals included).
        spent = servers[0].cpu_seconds() - cpu[0]
        capacity["server_cpu_ms_per_write"] = 1000 * spent / max(1.0, writes)
        rate = max(1.0, capacity["writes_per_s"])
        at_80 = await open_loop(load, 0.8 * rate, seconds)
        at_200 = await open_loop(load, 2.0 * rate, seconds / 2)
    finally:
        await load.close()
    return {"writers": writers, "capacity": capacity, "at_80": at_80, "at_200": at_200}


async def _write_elsewhere(mode: Mode, command: str, *args: int) -> dict:
    """Run one ``capture_writer.py`` command in another process (the writes no serving
    process sees); its last line of output, decoded."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(BENCH / "capture_writer.py"), command, *map(str, args)],
        env=child_env(mode),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


async def relay_the_backlog(servers: list[Server], world: World, mode: Mode) -> None:
    """The world was written with capture on: its change log waits for a relay, which a
    server starts with its first client. Connect one to each server and wait until the
    log is empty, so that no scenario pays for the preparation."""
    sockets = [await open_rx(server, world, world.small_job) for server in servers]
    try:
        await _write_elsewhere(mode, "drained", 300)
    finally:
        for ws in sockets:
            await ws.close()


async def capture(servers: list[Server], world: World, mode: Mode, reps: int) -> dict:
    """Changes no serving process made: raw SQL committed by another process, from its
    COMMIT to a watching client (wall clocks of one machine)."""
    watcher = await open_rx(servers[-1], world, world.small_job)
    first = next_marker()
    for _ in range(reps - 1):
        next_marker()
    seen: dict[int, float] = {}

    async def watch() -> None:
        while len(seen) < reps:
            text = await watcher.recv()
            received = time.time()
            for match in re.finditer(r"bench-(\d+)", text if isinstance(text, str) else ""):
                seen.setdefault(int(match.group(1)), received)

    watching = asyncio.create_task(watch())
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / "capture_writer.py"),
        "relay",
        str(world.small_task),
        str(first),
        str(reps),
        "100",
        env=child_env(mode),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await writer.communicate()
    await asyncio.wait_for(watching, 60)
    await watcher.close()
    committed = {row["k"]: row["committed"] for row in map(json.loads, out.decode().splitlines())}
    latency = [seen[k] - committed[k] for k in committed]
    return {"other_process": summary(latency)}


async def _saves_elsewhere(mode: Mode, first: int, seconds: float, pause_ms: int, tasks: list[int]):
    """Start ``capture_writer.py saves`` in another process (not serving clients)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / "capture_writer.py"),
        "saves",
        str(first),
        str(int(seconds)),
        str(pause_ms),
        *map(str, tasks),
        env=child_env(mode),
        stdout=asyncio.subprocess.PIPE,
    )


async def _watch_markers(ws: Any, seen: dict[int, float]) -> None:
    """Note when each marker first reaches ``ws`` (wall clock, as writers note commits)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for text in ws:
            now = time.time()
            for match in MARKER.finditer(text if isinstance(text, str) else ""):
                seen.setdefault(int(match.group(1)), now)


async def _committed_and_seen(
    writers: list[Any], seen: dict[int, float], wait: float = 30
) -> tuple[int, float, list[int], list[float]]:
    """Once the writers are done and the clients saw the last change of each row (or
    ``wait`` passed): how many changes were committed, when the first was, the last
    changes not seen, and the commit → client latency of every change seen."""
    outs = await asyncio.gather(*(writer.communicate() for writer in writers))
    rows = [row for out, _ in outs for row in map(json.loads, out.decode().splitlines())]
    committed = {row["k"]: row["committed"] for row in rows}
    # A row saved again before its propagation read it is sent once, with its latest
    # value: the clients must see the last change of each row, not every one.
    last: dict[int, int] = {}
    for row in rows:
        last[row["task"]] = max(last.get(row["task"], row["k"]), row["k"])
    finals = set(last.values())
    deadline = time.perf_counter() + wait
    while any(k not in seen for k in finals) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    latency = [seen[k] - committed[k] for k in committed if k in seen]
    first = min(committed.values(), default=time.time())
    return len(committed), first, [k for k in finals if k not in seen], latency


async def channel_changes(
    servers: list[Server], world: World, mode: Mode, writers: int, seconds: float
) -> dict:
    """Changes per second to one channel, for the whole deployment: ``writers`` processes
    that serve no client save tasks of jobs of their own one after another (each commit
    propagated by its writer, as a task worker's would be); a client of each job, the
    jobs spread over the servers, sees them. The rate is what the clients saw."""
    seen: dict[int, float] = {}
    sockets, first_task = [], []
    for index, job in enumerate(world.fanin_jobs):
        tasks: list[int] = []
        sockets.append(await open_rx(servers[index % len(servers)], world, job, tasks))
        first_task.append(tasks[0])
    readers = [asyncio.create_task(_watch_markers(ws, seen)) for ws in sockets]
    global _marker
    base = _marker + 1
    _marker += writers * 10_000_000
    try:
        procs = [
            await _saves_elsewhere(mode, base + w * 10_000_000, seconds, 0, first_task[w::writers])
            for w in range(writers)
        ]
        committed, started, missed, latency = await _committed_and_seen(procs, seen)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets))
    # The changes count once the latest value of every row reached the clients.
    span = max(seen.values()) - started if seen and not missed else float("inf")
    return {
        "writers": writers,
        "anchors": len(sockets),
        "changes": committed,
        "per_s": committed / span,
        "last_not_seen": len(missed),
        "commit_to_client": summary(latency) if latency else None,
    }


async def slow_neighbour(servers: list[Server], world: World, mode: Mode, seconds: float) -> dict:
    """An anchor's commit → client latency (another process saves one of its tasks 20
    times a second), alone, then while another anchor of the channel is slow to change:
    another process updates all the bulk job's tasks once a second (each
    propagation re-reads thousands of rows), a client watching it. Each anchor
    waits only for its own changes, so the first should barely notice (the two share
    the machine's cores)."""
    watcher = await open_rx(servers[-1], world, world.small_job)
    seen: dict[int, float] = {}
    reader = asyncio.create_task(_watch_markers(watcher, seen))
    results: dict[str, Any] = {}
    slow_socket = None
    try:
        for phase in ("alone", "beside_slow"):
            slow = None
            if phase == "beside_slow":
                slow_socket = await open_rx(servers[0], world, world.bulk_job)
                slow = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(BENCH / "capture_writer.py"),
                    "bulks",
                    str(world.bulk_job),
                    str(int(seconds) + 2),
                    "1000",
                    env=child_env(mode),
                    stdout=asyncio.subprocess.PIPE,
                )
                assert slow.stdout is not None
                # The first slow change has committed: its propagation is under way.
                first_line = await asyncio.wait_for(slow.stdout.readline(), 60)
            global _marker
            first = _marker + 1
            _marker += 100_000
            saver = await _saves_elsewhere(mode, first, seconds, 50, [world.small_task])
            committed, _, missed, latency = await _committed_and_seen([saver], seen)
            results[phase] = {
                "changes": committed,
                "last_not_seen": len(missed),
                "commit_to_client": summary(latency) if latency else None,
            }
            if slow is not None:
                out, _ = await slow.communicate()
                lines = [first_line.decode(), *out.decode().splitlines()]
                results["slow_updates"] = json.loads(lines[-1])["updates"]
    finally:
        reader.cancel()
        await watcher.close()
        if slow_socket is not None:
            await slow_socket.close()
    return results


def capture_overhead(mode: Mode, world: World, saves: int) -> dict:
    """What capturing adds to a one-row ``save()``: timed before any server starts, so
    it is the cost inside the writing transaction (the trigger and its log row), not
    the relay's work on the same two cores (that is counted per change)."""
    times = asyncio.run(_write_elsewhere(mode, "overhead", world.small_task, saves))
    return {
        "save_with_capture": summary(times["with"]),
        "save_without_capture": summary(times["without"]),
    }


async def bulk_update(servers: list[Server], world: World, mode: Mode, crowds: list[int]) -> dict:
    """One ``QuerySet.update()`` of every task of an anchor, committed by another
    process, watched by each crowd in turn: the time until every client holds every
    updated row, and the servers' work, which must not grow with the clients."""
    url = f"ws://{servers[-1].base}/ws/job/{world.bulk_job}/"
    runs = []
    for n in crowds:
        crowd = Crowd.start("rx", [url], n, {"token": world.token}, 1 if n < 10 else 4)
        k = next_marker()
        work_before = [server.work() for server in servers]
        try:
            committed = await _write_elsewhere(mode, "bulk", world.bulk_job, k)
        except RuntimeError:
            crowd.stop()
            raise
        times, _ = await asyncio.to_thread(crowd.collect, k, committed["rows"])
        crowd.stop()
        arrived = [t - committed["committed"] for t in times if t is not None]
        runs.append(
            {
                "clients": n,
                "rows": committed["rows"],
                "every_client_ms": max(arrived) * 1000 if arrived else None,
                "missing_clients": len(times) - len(arrived),
                "work": work_since(servers, work_before, 1),
            }
        )
    return {"runs": runs}


async def fan_in(servers: list[Server], world: World, mode: Mode) -> dict:
    """A user shown (as the developer) in 10 tasks of each of many anchors, one client
    per anchor, is renamed by another process: the time until every client has the
    new name, and the work, which must follow the records that read the user (each
    re-read once), not records times anchors."""
    sockets = [
        await open_rx(servers[index % len(servers)], world, job)
        for index, job in enumerate(world.fanin_jobs)
    ]
    k = next_marker()
    work_before = [server.work() for server in servers]
    committed = (await _write_elsewhere(mode, "rename_user", world.fanin_user, k))["committed"]

    async def arrival(ws: Any) -> float | None:
        try:
            while f"bench-{k}" not in await asyncio.wait_for(ws.recv(), 60):
                pass
            return time.time()
        except (TimeoutError, websockets.ConnectionClosed):
            return None

    times = await asyncio.gather(*(arrival(ws) for ws in sockets))
    work = work_since(servers, work_before, 1)
    await asyncio.gather(*(ws.close() for ws in sockets))
    arrived = [t - committed for t in times if t is not None]
    return {
        "anchors": len(sockets),
        "reading_records": 10 * len(sockets),
        "every_client_ms": max(arrived) * 1000 if arrived else None,
        "missing_clients": len(times) - len(arrived),
        "work": work,
    }


def client_builder(smoke: bool) -> dict:
    script = BENCH / "client_bench.mjs"
    done = subprocess.run(
        ["node", str(script), "1000" if smoke else "10000"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)


# -- report -----------------------------------------------------------------------------

COUNTED = ("queries", "serialized", "frames")


def targets(results: dict) -> list[dict]:
    checks = []

    def check(name: str, value: float, holds: bool, goal: str) -> None:
        checks.append({"target": name, "value": round(value, 2), "goal": goal, "holds": holds})

    for run in results["runs"]:
        label = "" if run["key"] == "single" else f" ({run['key']})"
        fan = {(r["kind"], r["clients"]): r for r in run["fan_out"]}
        big_n = run["largest_crowd"]
        for peer, name in (("dcrf", "DCRF instance mixin"), ("dcrf_group", "DCRF group observer")):
            if ("rx", big_n) in fan and (peer, big_n) in fan:
                rx = fan[("rx", big_n)]["per_client"]["p99_ms"]
                other = fan[(peer, big_n)]["per_client"]["p99_ms"]
                # Both measured from the writing client's frame (write, commit, fan-out).
                ratio = other / rx
                check(
                    f"fan-out p99 at {big_n}: {name} / RxDjango{label}", ratio, ratio >= 3, ">= 3"
                )
        if ("rx", big_n) in fan and ("floor", big_n) in fan:
            floor = fan[("floor", big_n)]["per_client"]["p99_ms"]
            committed = fan[("rx", big_n)]["from_commit"]["p99_ms"]
            # From the commit (the frame's _tstamp) to each client, against the floor.
            ratio = committed / floor
            check(
                f"fan-out p99 at {big_n}: RxDjango from commit / floor", ratio, ratio <= 2, "<= 2"
            )
        if ("rx", big_n) in fan:
            rate = fan[("rx", big_n)]["connects_per_s"]
            check(f"clients connected per second, {big_n}{label}", rate, rate >= 200, ">= 200")
        if ("rx", big_n) in fan and run["key"] == "single":
            memory = fan[("rx", big_n)]["rss_per_connection_kib"]
            check(f"RSS per idle connection at {big_n} (KiB)", memory, memory < 64, "< 64")
        if "ten_thousand" in run:
            crowd = run["ten_thousand"]
            n = crowd["rx"]["clients"]
            rate = crowd["rx"]["connects_per_s"]
            check(f"clients connected per second, {n}{label}", rate, rate >= 200, ">= 200")
            memory = crowd["rx"]["rss_per_connection_kib"]
            check(f"RSS per idle connection at {n} (KiB){label}", memory, memory <= 40, "<= 40")
            if crowd["rx"]["last_client"] and crowd["floor"]["last_client"]:
                ratio = (
                    crowd["rx"]["last_client"]["p50_ms"] / crowd["floor"]["last_client"]["p50_ms"]
                )
                check(f"last of {n} clients, p50 / floor{label}", ratio, ratio <= 1.3, "<= 1.3")
        costs = {r["clients"]: r["cost_per_change"] for r in run["fan_out"] if r["kind"] == "rx"}
        if 1 in costs and big_n in costs and costs[1] and costs[big_n]:
            one, many = costs[1], costs[big_n]
            # Exact counts: queries, serializations and frames do not depend on clients.
            work_one = sum(one[name] for name in COUNTED)
            work_many = sum(many[name] for name in COUNTED)
            ratio = work_many / work_one if work_one else float("inf")
            check(f"work per change at {big_n} / at 1{label}", ratio, ratio <= 1, "<= 1")
            if "redis" in one:
                # Background heartbeats land in either window, so allow a little noise.
                calls_one, calls_many = sum(one["redis"].values()), sum(many["redis"].values())
                ratio = calls_many / calls_one if calls_one else float("inf")
                check(
                    f"Redis commands per change at {big_n} / at 1{label}",
                    ratio,
                    ratio <= 1.1,
                    "<= 1.1",
                )
        if "capture" in run:
            captured = run["capture"]
            limit = 100 if run["key"] == "single" else 20  # SQLite polls; PostgreSQL notifies
            p99 = captured["other_process"]["p99_ms"]
            check(
                f"another process's change to a client, p99 ms{label}",
                p99,
                p99 <= limit,
                f"<= {limit}",
            )
            cost = (
                captured["save_with_capture"]["p50_ms"] / captured["save_without_capture"]["p50_ms"]
            )
            check(f"one-row save with capture / without (p50){label}", cost, cost <= 1.3, "<= 1.3")
        if "bulk_update" in run:
            bulk = {r["clients"]: r for r in run["bulk_update"]["runs"]}
            few, most = bulk[min(bulk)], bulk[max(bulk)]
            check(
                f"update() of {most['rows']} rows: clients missing it at {most['clients']}{label}",
                most["missing_clients"],
                most["missing_clients"] == 0,
                "0",
            )
            # Work follows the rows: the same for 1 client as for the crowd.
            work_few = sum(few["work"][name] for name in COUNTED)
            work_most = sum(most["work"][name] for name in COUNTED)
            ratio = work_most / work_few if work_few else float("inf")
            check(
                f"update() work at {most['clients']} clients / at {few['clients']}{label}",
                ratio,
                ratio <= 1,
                "<= 1",
            )
            per_row = most["work"]["serialized"] / most["rows"]
            check(f"update() serializations per row{label}", per_row, per_row <= 1, "<= 1")
        if "fan_in" in run:
            fan = run["fan_in"]
            check(
                f"user rename in {fan['anchors']} anchors: clients missing it{label}",
                fan["missing_clients"],
                fan["missing_clients"] == 0,
                "0",
            )
            # Each record reading the user is re-read once (plus the user's own, and a
            # few rows of its layers), however many anchors hold them.
            per_record = fan["work"]["serialized"] / fan["reading_records"]
            check(
                f"user rename: serializations per reading record{label}",
                per_record,
                per_record <= 1.05,
                "<= 1.05",
            )
        if "sustained_writes" in run:
            writes = run["sustained_writes"]
            rate = writes["capacity"]["writes_per_s"]
            check(f"sustained writes/s to one process{label}", rate, rate >= 300, ">= 300")
            seen = writes["at_80"]["write_to_client"]
            p99 = seen["p99_ms"] if seen else float("inf")
            check(f"write -> client p99 at 80% of that (ms){label}", p99, p99 <= 100, "<= 100")
            over = writes["at_200"]
            seen = over["write_to_client"]
            p99 = seen["p99_ms"] if seen else float("inf")
            # Beyond capacity writes are refused at once, so the accepted ones stay quick.
            check(f"write -> client p99 at twice that (ms){label}", p99, p99 <= 1000, "<= 1000")
            lost = over["unanswered"] + over["not_seen"]
            check(f"writes at twice that: unanswered or unseen{label}", lost, lost == 0, "0")
        if "channel_changes" in run:
            rate = run["channel_changes"]["per_s"]
            check(f"changes/s to one channel{label}", rate, rate >= 400, ">= 400")
            slow = run["slow_neighbour"]
            alone, beside = (
                slow["alone"]["commit_to_client"],
                slow["beside_slow"]["commit_to_client"],
            )
            extra = beside["p99_ms"] - alone["p99_ms"] if alone and beside else float("inf")
            check(
                f"an anchor's p99 beside a slow one - alone (ms){label}",
                extra,
                extra <= 10,
                "<= 10",
            )
        if run["key"] == "single":
            load = run["initial_state"]
            ratio = load["rest"]["p50_ms"] / load["rx_hot"]["p50_ms"]
            check("hot initial load: REST / RxDjango (p50)", ratio, ratio >= 5, ">= 5")
            cold = load["rx_cold"]["p50_ms"] / load["rest"]["p50_ms"]
            check("cold initial load: RxDjango / REST (p50)", cold, cold <= 1, "<= 1")
    client = results["client"]
    check(
        "client: 10k-record load (ms, p50)",
        client["load"]["p50_ms"],
        client["load"]["p50_ms"] < 200,
        "< 200",
    )
    check(
        "client: one delta (ms, p50)",
        client["delta"]["p50_ms"],
        client["delta"]["p50_ms"] < 1,
        "< 1",
    )
    return checks


def print_run(run: dict) -> None:
    print(f"\n== {run['setup']} ==\n")
    header = f"{'fan-out (from the trigger)':<28}{'clients':>8}{'p50 ms':>10}{'p99 ms':>10}"
    print(f"{header}{'last p99':>10}{'lost':>6}{'commit p99':>12}")
    for r in run["fan_out"]:
        pc, lc = r["per_client"], r["last_client"]
        commit = f"{r['from_commit']['p99_ms']:>12.2f}" if r["from_commit"] else f"{'':>12}"
        print(
            f"{r['kind']:<28}{r['clients']:>8}{pc['p50_ms']:>10.2f}{pc['p99_ms']:>10.2f}"
            f"{lc['p99_ms']:>10.2f}{r['lost']:>6}{commit}"
        )
    costs = [r for r in run["fan_out"] if r["cost_per_change"]]
    if costs:
        header = f"{'cost per change (RxDjango)':<28}{'clients':>8}"
        print(f"\n{header}{'queries':>10}{'serialized':>12}{'frames':>8}{'redis':>8}")
        for r in costs:
            cost = r["cost_per_change"]
            redis_calls = f"{sum(cost['redis'].values()):>8.1f}" if "redis" in cost else f"{'-':>8}"
            print(
                f"{'rx':<28}{r['clients']:>8}{cost['queries']:>10.1f}{cost['serialized']:>12.1f}"
                f"{cost['frames']:>8.1f}{redis_calls}"
            )
    load = run["initial_state"]
    print(f"\n{'initial state (' + str(load['tasks']) + ' tasks)':<36}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("rx_cold", "rx_hot", "rest", "dcrf_retrieve"):
        print(f"{name:<36}{load[name]['p50_ms']:>10.2f}{load[name]['p99_ms']:>10.2f}")
    writes = run["write_round_trip"]
    print(f"\n{'write round trip':<36}{'p50 ms':>10}{'p99 ms':>10}")
    for name, value in writes.items():
        print(f"{name:<36}{value['p50_ms']:>10.2f}{value['p99_ms']:>10.2f}")
    captured = run["capture"]
    print(f"\n{'change capture':<36}{'p50 ms':>10}{'p99 ms':>10}")
    for name, value in captured.items():
        print(f"{name:<36}{value['p50_ms']:>10.2f}{value['p99_ms']:>10.2f}")
    fan = run["fan_in"]
    every = fan["every_client_ms"]
    print(
        f"\nuser renamed, shown in {fan['reading_records']} tasks of {fan['anchors']} anchors: "
        f"{'-' if every is None else f'{every:.0f}'} ms to every client; "
        f"{fan['work']['queries']:.0f} queries, {fan['work']['serialized']:.0f} serialized, "
        f"{fan['work']['frames']:.0f} frames"
    )
    header = f"{'QuerySet.update(), another process':<36}{'clients':>8}{'rows':>8}"
    print(f"\n{header}{'all ms':>10}{'queries':>9}{'serialized':>11}{'frames':>8}")
    for r in run["bulk_update"]["runs"]:
        ms = r["every_client_ms"]
        every = f"{ms:>10.0f}" if ms is not None else f"{'-':>10}"
        work = r["work"]
        print(
            f"{'rx':<36}{r['clients']:>8}{r['rows']:>8}{every}{work['queries']:>9.0f}"
            f"{work['serialized']:>11.0f}{work['frames']:>8.0f}"
        )
    print_writes(run["sustained_writes"])
    print_concurrency(run)


def print_writes(writes: dict) -> None:
    capacity = writes["capacity"]
    print(
        f"\nsustained writes to one process, {writes['writers']} connections: "
        f"{capacity['writes_per_s']:.0f} writes/s answered one after another "
        f"({capacity['refused']} refused; {capacity['server_cpu_ms_per_write']:.1f} ms of the "
        "server's CPU per write)"
    )
    header = f"{'offered':<36}{'per s':>8}{'accepted':>10}{'refused':>9}"
    print(f"{header}{'p50 ms':>10}{'p99 ms':>10}{'not seen':>10}")
    for name, label in (("at_80", "80% of that"), ("at_200", "twice that")):
        r = writes[name]
        seen = r["write_to_client"]
        p50, p99 = (seen["p50_ms"], seen["p99_ms"]) if seen else (float("nan"),) * 2
        refused = sum(r["refused"].values()) + r["unanswered"]
        print(
            f"{label + ' (write -> client)':<36}{r['offered_per_s']:>8.0f}{r['accepted']:>10}"
            f"{refused:>9}{p50:>10.1f}{p99:>10.1f}{r['not_seen']:>10}"
        )


def print_concurrency(run: dict) -> None:
    changes = run["channel_changes"]
    seen = changes["commit_to_client"] or {"p50_ms": float("nan"), "p99_ms": float("nan")}
    print(
        f"\nchanges to one channel from {changes['writers']} processes saving tasks of "
        f"{changes['anchors']} anchors: {changes['per_s']:.0f}/s "
        f"(commit -> client p50 {seen['p50_ms']:.1f} ms, p99 {seen['p99_ms']:.1f} ms; "
        f"{changes['last_not_seen']} rows whose last change was not seen)"
    )
    slow = run["slow_neighbour"]
    print(f"{'one anchor, commit -> client':<36}{'changes':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for name, label in (("alone", "alone"), ("beside_slow", "beside a slow anchor")):
        r = slow[name]
        seen = r["commit_to_client"] or {"p50_ms": float("nan"), "p99_ms": float("nan")}
        print(f"{label:<36}{r['changes']:>8}{seen['p50_ms']:>10.1f}{seen['p99_ms']:>10.1f}")
    print(f"(the slow anchor: {slow['slow_updates']} updates of all its tasks meanwhile)")


def print_table(results: dict) -> None:
    print(f"\nRxDjango benchmarks ({results['when']}, {results['mode']})")
    for run in results["runs"]:
        print_run(run)
    client = results["client"]
    print(
        f"\n{'client state builder (' + str(client['records']) + ' records)':<36}"
        f"{'p50 ms':>10}{'p99 ms':>10}"
    )
    for name in ("load", "delta"):
        print(f"{name:<36}{client[name]['p50_ms']:>10.3f}{client[name]['p99_ms']:>10.3f}")
    print(f"\n{'target':<52}{'value':>10}  {'goal':<8}holds")
    for t in results["targets"]:
        print(f"{t['target']:<52}{t['value']:>10}  {t['goal']:<8}{'yes' if t['holds'] else 'NO'}")


# -- orchestration ----------------------------------------------------------------------


async def scenarios(servers: list[Server], world: World, mode: Mode, smoke: bool) -> dict:
    sizes = [10] if smoke else [100, 1000]
    reps = 3 if smoke else 20
    redis = redis_client(mode)
    run: dict[str, Any] = {"setup": mode.name, "key": mode.env["BENCH_MODE"], "fan_out": []}
    for n in [1, *sizes]:
        for kind in mode.kinds:
            if n == 1 and kind != "rx":
                continue  # one client: only to count RxDjango's work per change
            crowd_processes = 1 if smoke or n == 1 else 4
            progress(f"{mode.env['BENCH_MODE']}: fan-out, {kind}, {n} clients")
            result = await fan_out(servers, world, kind, n, reps, crowd_processes, redis)
            run["fan_out"].append(result)
    progress(f"{mode.env['BENCH_MODE']}: initial state")
    run["initial_state"] = await initial_state(servers[0], world, reps)
    progress(f"{mode.env['BENCH_MODE']}: write round trip")
    run["write_round_trip"] = await write_round_trip(servers, world, reps)
    progress(f"{mode.env['BENCH_MODE']}: changes made by another process")
    run["capture"] = await capture(servers, world, mode, reps)
    progress(f"{mode.env['BENCH_MODE']}: QuerySet.update() of {world.bulk_tasks} rows")
    run["bulk_update"] = await bulk_update(servers, world, mode, [1, 10 if smoke else 100])
    progress(f"{mode.env['BENCH_MODE']}: a user shown in {len(world.fanin_jobs)} anchors renamed")
    run["fan_in"] = await fan_in(servers, world, mode)
    run["largest_crowd"] = sizes[-1]
    return run


def run_mode(mode: Mode, smoke: bool, alone: str | None = None) -> dict:
    progress(f"{mode.name}: preparing the database")
    world = prepare_database(
        mode, 50 if smoke else 2000, 200 if smoke else 10_000, 10 if smoke else 100
    )
    if alone is not None:
        return run_alone(mode, world, alone, smoke)
    progress(f"{mode.name}: what capture adds to a one-row save")
    overhead = capture_overhead(mode, world, 30 if smoke else 1000)
    servers: list[Server] = []
    try:
        for _ in range(mode.servers):
            servers.append(start_server(world, mode))
        asyncio.run(relay_the_backlog(servers, world, mode))
        run = asyncio.run(scenarios(servers, world, mode, smoke))
        run["capture"].update(overhead)
        stop_servers(servers)
        if mode.servers == 1:  # one process's limits: on one process only
            huge = 100 if smoke else 10_000
            progress(f"{mode.env['BENCH_MODE']}: RxDjango and the floor to {huge} clients")
            servers = [start_server(world, mode, deflate=False)]
            run["ten_thousand"] = asyncio.run(
                ten_thousand(servers, world, huge, 3 if smoke else 10)
            )
            stop_servers(servers)
        # Writes per second measure RxDjango's own write path: its servers alone (the
        # peers' observers would serialize and publish every save too).
        servers = []
        for _ in range(mode.servers):
            servers.append(start_server(world, mode, peers=False))
        writers = len(world.fanin_jobs) if smoke else 50
        progress(f"{mode.env['BENCH_MODE']}: sustained writes from {writers} connections")
        run["sustained_writes"] = asyncio.run(
            sustained_writes(servers, world, writers, 2 if smoke else 10)
        )
        progress(f"{mode.env['BENCH_MODE']}: changes per second to one channel")
        run["channel_changes"] = asyncio.run(
            channel_changes(servers, world, mode, 4, 2 if smoke else 10)
        )
        progress(f"{mode.env['BENCH_MODE']}: an anchor beside a slow one")
        run["slow_neighbour"] = asyncio.run(slow_neighbour(servers, world, mode, 2 if smoke else 8))
        return run
    finally:
        stop_servers(servers)
        forget_redis_keys(redis_client(mode), mode)
        drop_database(mode)


#: Scenarios that ``--scenario`` runs by themselves (on servers without peers).
ALONE: dict[str, Callable[[list[Server], World, Mode, bool], Awaitable[dict]]] = {
    "sustained_writes": lambda servers, world, mode, smoke: sustained_writes(
        servers, world, len(world.fanin_jobs) if smoke else 50, 2 if smoke else 10
    ),
    "channel_changes": lambda servers, world, mode, smoke: channel_changes(
        servers, world, mode, 4, 2 if smoke else 10
    ),
    "slow_neighbour": lambda servers, world, mode, smoke: slow_neighbour(
        servers, world, mode, 2 if smoke else 8
    ),
    "ten_thousand": lambda servers, world, mode, smoke: ten_thousand(
        servers, world, 100 if smoke else 10_000, 3 if smoke else 10
    ),
}


async def ten_thousand(servers: list[Server], world: World, n: int, reps: int) -> dict:
    """RxDjango and the raw-websocket floor, each to one crowd of ``n`` clients of one
    anchor: connect rate, memory per connection and fan-out (on a server without
    permessage-deflate, as ``docs/production.md`` advises for such crowds)."""
    return {kind: await fan_out(servers, world, kind, n, reps, 4, None) for kind in ("rx", "floor")}


def run_alone(mode: Mode, world: World, name: str, smoke: bool) -> dict:
    """One scenario by itself, to measure a change to it quickly (not a full run)."""
    servers: list[Server] = []
    try:
        for _ in range(mode.servers):
            crowd = name == "ten_thousand"
            servers.append(start_server(world, mode, peers=crowd, deflate=not crowd))
        progress(f"{mode.env['BENCH_MODE']}: {name} alone")
        return {"setup": mode.name, name: asyncio.run(ALONE[name](servers, world, mode, smoke))}
    finally:
        stop_servers(servers)
        forget_redis_keys(redis_client(mode), mode)
        drop_database(mode)


def stop_servers(servers: list[Server]) -> None:
    for server in servers:
        if server.process.poll() is None:
            server.process.terminate()
    for server in servers:
        server.process.wait(30)


def run(smoke: bool, modes: list[str], alone: str | None = None) -> dict:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "mode": "smoke" if smoke else "full",
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        if "single" in modes:
            results["runs"].append(run_mode(single_mode(Path(scratch)), smoke, alone))
        if "multi" in modes:
            results["runs"].append(run_mode(multi_mode(), smoke, alone))
    if alone is not None:
        return results
    results["client"] = client_builder(smoke)
    results["targets"] = targets(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the harness")
    parser.add_argument(
        "--only", choices=["single", "multi"], help="run one set-up instead of both"
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(ALONE),
        help="run this scenario alone and print its figures (nothing is written)",
    )
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    modes = [args.only] if args.only else ["single", "multi"]
    if args.scenario:
        print(json.dumps(run(args.smoke, modes, args.scenario), indent=2))
        return
    results = run(args.smoke, modes)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()
