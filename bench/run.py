"""``make bench``: RxDjango beside DCRF, a DRF REST endpoint and a raw-WebSocket floor.

One run, one machine: a single uvicorn process serves all four (SQLite, embedded
defaults), client connections live in separate processes (``clients.py``). Prints
one table and writes ``bench/results/latest.json``. ``--smoke`` runs every scenario
at toy sizes (``make test`` does, to keep the harness working); its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TESTS = ROOT / "tests"
TASK_TYPE = "jobs.serializers.TaskSerializer"
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


def prepare_database(path: Path, big_tasks: int) -> World:
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchproject.settings"
    os.environ["BENCH_DB"] = str(path)
    sys.path[:0] = [str(BENCH), str(TESTS)]
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from jobs.models import Job, Participant, Project, Task

    call_command("migrate", verbosity=0)
    User = get_user_model()
    staff = User.objects.create_user("bench", is_staff=True)
    project = Project.objects.create(name="Bench")
    developers = [
        Participant.objects.create(project=project, user=User.objects.create_user(f"dev{i}"))
        for i in range(10)
    ]
    small = Job.objects.create(project=project, title="small")
    tasks = Task.objects.bulk_create(Task(job=small, title=f"task {i}") for i in range(10))
    big_jobs = []
    for index in range(3):
        big = Job.objects.create(project=project, title=f"big {index}")
        Task.objects.bulk_create(
            Task(job=big, title=f"task {i} " + "x" * 40, developer=developers[i % 10])
            for i in range(big_tasks)
        )
        big_jobs.append(big.pk)
    token = Token.objects.create(user=staff).key
    return World(token, small.pk, tasks[0].pk, big_jobs, big_tasks)


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


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BENCH), str(TESTS)]),
        "DJANGO_SETTINGS_MODULE": "benchproject.settings",
    }


def start_server(world: World) -> Server:
    # --port, not --fd: uvicorn takes a passed descriptor for a Unix socket, and asyncio
    # then leaves Nagle's algorithm on, which adds ~40 ms to every second small frame.
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    command = [sys.executable, "-m", "uvicorn", "benchproject.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--ws-max-size", str(2**24), "--backlog", "4096"]
    command += ["--ws-ping-interval", "600", "--ws-ping-timeout", "600"]  # no keepalive noise
    process = subprocess.Popen(command, env=child_env())
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
    def start(cls, kind: str, url: str, count: int, options: dict, processes: int) -> Crowd:
        crowd = cls()
        per = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
        for size in per:
            if size:
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

    def collect(self, k: int) -> tuple[list[float | None], list[float]]:
        """Receive times of change ``k`` per connection, and (RxDjango) times since commit."""
        for worker in self.workers:
            worker.stdin.write(json.dumps({"collect": k}) + "\n")
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


async def open_rx(server: Server, world: World, job: int) -> Any:
    ws = await websockets.connect(
        f"ws://{server.base}/ws/job/{job}/", max_size=2**25, ping_interval=None
    )
    await ws.send(json.dumps({"token": world.token, "lastUpdate": None}))
    while '"end_initial_state"' not in await ws.recv():
        pass
    return ws


# -- scenarios ---------------------------------------------------------------------------


async def fan_out(
    server: Server, world: World, kind: str, n: int, reps: int, processes: int
) -> dict:
    """One change to a task, to n clients: trigger → each client's receipt."""
    urls = {
        "rx": f"ws://{server.base}/ws/job/{world.small_job}/",
        "dcrf": f"ws://{server.base}/dcrf/tasks/",
        "floor": f"ws://{server.base}/floor/",
    }
    rss_before = server.rss_kib()
    crowd = Crowd.start(
        kind, urls[kind], n, {"token": world.token, "task": world.small_task}, processes
    )
    rss_after = server.rss_kib()
    if kind == "rx":
        trigger = await open_rx(server, world, world.small_job)
    else:
        trigger = await websockets.connect(urls[kind], max_size=2**25, ping_interval=None)
    last: list[float] = []
    each: list[float] = []
    from_commit: list[float] = []
    lost = 0
    failure = None
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
            elif kind == "dcrf":
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
    finally:
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


async def write_round_trip(server: Server, world: World, reps: int) -> dict:
    writer = await open_rx(server, world, world.small_job)
    watcher = await open_rx(server, world, world.small_job)
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


def targets(results: dict, big_n: int) -> list[dict]:
    fan = {(r["kind"], r["clients"]): r for r in results["fan_out"]}
    checks = []

    def check(name: str, value: float, holds: bool, goal: str) -> None:
        checks.append({"target": name, "value": round(value, 2), "goal": goal, "holds": holds})

    if ("rx", big_n) in fan and ("dcrf", big_n) in fan and ("floor", big_n) in fan:
        rx = fan[("rx", big_n)]["per_client"]["p99_ms"]
        dcrf = fan[("dcrf", big_n)]["per_client"]["p99_ms"]
        floor = fan[("floor", big_n)]["per_client"]["p99_ms"]
        committed = fan[("rx", big_n)]["from_commit"]["p99_ms"]
        # Both peers measured from the writing client's frame (write, commit, fan-out).
        check(f"fan-out p99 at {big_n}: DCRF / RxDjango", dcrf / rx, dcrf / rx >= 3, ">= 3")
        # From the commit (the frame's _tstamp) to each client, against the floor's fan-out.
        check(
            f"fan-out p99 at {big_n}: RxDjango from commit / floor",
            committed / floor,
            committed / floor <= 2,
            "<= 2",
        )
        memory = fan[("rx", big_n)]["rss_per_connection_kib"]
        check(f"RSS per idle connection at {big_n} (KiB)", memory, memory < 64, "< 64")
    load = results["initial_state"]
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


def print_table(results: dict) -> None:
    print(f"\nRxDjango benchmarks ({results['when']}, {results['mode']})\n")
    header = f"{'fan-out (from the trigger)':<28}{'clients':>8}{'p50 ms':>10}{'p99 ms':>10}"
    print(f"{header}{'last p99':>10}{'lost':>6}{'commit p99':>12}")
    for r in results["fan_out"]:
        pc, lc = r["per_client"], r["last_client"]
        commit = f"{r['from_commit']['p99_ms']:>12.2f}" if r["from_commit"] else f"{'':>12}"
        print(
            f"{r['kind']:<28}{r['clients']:>8}{pc['p50_ms']:>10.2f}{pc['p99_ms']:>10.2f}"
            f"{lc['p99_ms']:>10.2f}{r['lost']:>6}{commit}"
        )
    load = results["initial_state"]
    print(f"\n{'initial state (' + str(load['tasks']) + ' tasks)':<36}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("rx_cold", "rx_hot", "rest", "dcrf_retrieve"):
        print(f"{name:<36}{load[name]['p50_ms']:>10.2f}{load[name]['p99_ms']:>10.2f}")
    writes = results["write_round_trip"]
    print(f"\n{'write round trip':<36}{'p50 ms':>10}{'p99 ms':>10}")
    for name, value in writes.items():
        print(f"{name:<36}{value['p50_ms']:>10.2f}{value['p99_ms']:>10.2f}")
    client = results["client"]
    print(
        f"\n{'client state builder (' + str(client['records']) + ' records)':<36}"
        f"{'p50 ms':>10}{'p99 ms':>10}"
    )
    for name in ("load", "delta"):
        print(f"{name:<36}{client[name]['p50_ms']:>10.3f}{client[name]['p99_ms']:>10.3f}")
    print(f"\n{'target':<48}{'value':>10}  {'goal':<8}holds")
    for t in results["targets"]:
        print(f"{t['target']:<48}{t['value']:>10}  {t['goal']:<8}{'yes' if t['holds'] else 'NO'}")


async def scenarios(server: Server, world: World, smoke: bool) -> dict:
    sizes = [10] if smoke else [100, 1000]
    reps = 3 if smoke else 20
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "mode": "smoke" if smoke else "full",
        "fan_out": [],
    }
    for n in sizes:
        for kind in ("floor", "rx", "dcrf"):
            crowd_processes = 1 if smoke else 4
            progress(f"fan-out: {kind}, {n} clients")
            results["fan_out"].append(await fan_out(server, world, kind, n, reps, crowd_processes))
    progress("initial state")
    results["initial_state"] = await initial_state(server, world, reps)
    progress("write round trip")
    results["write_round_trip"] = await write_round_trip(server, world, reps)
    results["largest_crowd"] = sizes[-1]
    return results


def run(smoke: bool) -> dict:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with tempfile.TemporaryDirectory() as scratch:
        world = prepare_database(Path(scratch) / "bench.sqlite3", 50 if smoke else 2000)
        server = start_server(world)
        try:
            results = asyncio.run(scenarios(server, world, smoke))
        finally:
            server.process.terminate()
            server.process.wait(30)
    results["client"] = client_builder(smoke)
    results["targets"] = targets(results, results["largest_crowd"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the harness")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    results = run(args.smoke)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()
