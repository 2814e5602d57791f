"""``make soak``: many churning clients on one server process, changes flowing, for minutes.

One uvicorn process serves the benchmark project (``run.py``'s single-process set-up:
SQLite, embedded backend). Client processes (``soak_clients.py``) keep ``--clients``
connections to the small job's anchor and keep closing and reopening them: each stays
open for a random time, then closes (or drops its TCP connection), and comes back
after a pause with ``lastUpdate`` or fresh; a few give up during their start sequence.
Meanwhile one writer connection commits changes to the job's tasks (title saves,
creates, deletes, bursts of renames through the ``rename_repeatedly`` action).

At the end the writer stops, the clients stop churning and reconnect, and every
client's rebuilt state must equal a fresh connection's, which must hold the title the
writer last wrote and the task ids in the database. Errors (failed connects, refused
auth, sockets the server closed, error frames, failed writes, anything the server
logged) must be 0 and the server's RSS at the end must stay within ``RSS_BOUND`` of
its RSS after the warm-up. Prints a summary, writes ``bench/results/soak.json`` and
exits 1 if any of that fails. ``--short`` is the CI version (100 clients, 25 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from run import (
    BENCH,
    TASK_TYPE,
    Server,
    World,
    child_env,
    open_rx,
    prepare_database,
    progress,
    single_mode,
    start_server,
)

JOB_TYPE = "jobs.serializers.JobSerializer"
RESULTS = BENCH / "results" / "soak.json"

# The memory bound: RSS at the end <= RSS after the warm-up * 1.25 + 20 MiB. The start
# figure is taken once the crowd has churned for a mean lifetime, with about as many
# connections open as at the end: by then RSS has made its one climb of the first few
# hundred reconnects (freed per-connection buffers, e.g. permessage-deflate's zlib
# state, stay in glibc's heap and are reused) and levels off. What may still grow is
# bounded: the anchor's change history (RX_HISTORY_SIZE entries, well under a MiB
# here), allocator noise and how many reconnects are in flight at the end, a few MiB
# at 1,000 clients. 25% + 20 MiB (~65 MiB at 1,000 clients) leaves room for that and
# still fails a leak of ~4 KiB per connection opened in a 300-second run at 1,000
# clients (~17,000 connections), or any buffer that grows with time. The JSON also
# reports the growth per 1,000 connections opened, to spot smaller leaks.
RSS_FACTOR = 1.25
RSS_SLACK_KIB = 20 * 1024
RSS_BOUND = f"end <= start * {RSS_FACTOR} + {RSS_SLACK_KIB // 1024} MiB"
#: seconds to wait for a client process's answer before giving up on it
ANSWER_DEADLINE = 300.0


@dataclass
class Config:
    clients: int = 1000
    duration: float = 300.0
    warmup: float | None = None  # default: one mean lifetime, at most a quarter of the run
    processes: int = 2
    lifetime: float = 20.0
    off_time: float = 1.0
    resume: float = 0.5
    abort: float = 0.05
    drop: float = 0.1
    rate: float = 4.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.warmup is None:
            self.warmup = min(self.lifetime, self.duration / 4)


# The CI version. Its warm-up covers the first few hundred connections, during which
# the server's RSS climbs once (thread arenas, buffers) before it levels off.
SHORT = {"clients": 100, "duration": 25.0, "warmup": 15.0, "processes": 1, "lifetime": 2.0}


# -- the crowd -------------------------------------------------------------------------


@dataclass
class Churners:
    """Client processes of ``soak_clients.py``, asked the same question together."""

    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    ready: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, url: str, config: Config, world: World, env: dict) -> Churners:
        crowd = cls()
        n, parts = config.clients, max(1, config.processes)
        for index in range(parts):
            size = n // parts + (1 if index < n % parts else 0)
            options = {
                "token": world.token,
                "lifetime": config.lifetime,
                "off_time": config.off_time,
                "resume": config.resume,
                "abort": config.abort,
                "drop": config.drop,
                "seed": config.seed * 1000 + index,
            }
            crowd.processes.append(
                await asyncio.create_subprocess_exec(
                    *(sys.executable, str(BENCH / "soak_clients.py"), url, str(size)),
                    json.dumps(options),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                    limit=2**24,
                )
            )
        crowd.ready = await crowd.answers()
        return crowd

    async def answers(self) -> list[dict[str, Any]]:
        replies = []
        for process in self.processes:
            line = await asyncio.wait_for(process.stdout.readline(), ANSWER_DEADLINE)
            if not line:
                raise RuntimeError(f"a client process exited ({await process.wait()})")
            replies.append(json.loads(line))
        return replies

    async def ask(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        for process in self.processes:
            process.stdin.write((json.dumps(command) + "\n").encode())
            await process.stdin.drain()
        return await self.answers()

    async def quit(self) -> list[dict[str, Any]]:
        finals = await self.ask({"quit": True})
        for process in self.processes:
            await asyncio.wait_for(process.wait(), ANSWER_DEADLINE)
        return finals

    def kill(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()


def total(answers: list[dict[str, Any]], name: str) -> int:
    return sum(answer.get(name, 0) for answer in answers)


def merged_errors(answers: list[dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
    kinds: dict[str, int] = {}
    samples: list[str] = []
    for answer in answers:
        for kind, count in answer.get("error_kinds", {}).items():
            kinds[kind] = kinds.get(kind, 0) + count
        samples.extend(answer.get("error_samples", []))
    return kinds, samples[:20]


# -- the writer ------------------------------------------------------------------------


@dataclass
class Writer:
    """One RxDjango connection committing changes to the small job, a few per second."""

    ws: Any
    world: World
    #: the tasks of the job, as the writer's commits leave them
    task_ids: set[int]
    #: the tasks the job had before the writer started (it deletes only its own)
    original: set[int] = field(default_factory=set)
    title: str = ""
    commits: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _next_id: int = 0

    async def request(self, frame: dict[str, Any], key: str, reply_type: str) -> dict | None:
        """Send ``frame`` and read (skipping the deltas) until its reply."""
        self._next_id += 1
        frame = {**frame, key: self._next_id}
        await self.ws.send(json.dumps(frame))
        async with asyncio.timeout(ANSWER_DEADLINE):
            while True:
                text = await self.ws.recv()
                if text.startswith("["):
                    continue
                reply = json.loads(text)
                if reply.get("type") == reply_type and reply.get(key) == self._next_id:
                    return reply
                if reply.get("type") in ("error", "maintenance"):
                    self.failures.append(f"{reply}"[:300])
                    return None

    async def write(self, operation: str, **fields: Any) -> dict | None:
        reply = await self.request(
            {"type": "write", "operation": operation, **fields}, "writeId", "writeResponse"
        )
        if reply is not None and not reply.get("success"):
            self.failures.append(f"{operation}: {reply}"[:300])
            return None
        return reply

    def did(self, kind: str, commits: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.commits += commits

    async def change(self, rng: random.Random) -> None:
        """One random change (or a burst of them)."""
        small = self.world.small_task
        created = sorted(self.task_ids - self.original)
        roll = rng.random()
        n = self.commits
        if roll < 0.1 and len(created) < 5:
            reply = await self.write(
                "create",
                instanceType=TASK_TYPE,
                parentType=JOB_TYPE,
                parentId=self.world.small_job,
                relationName="tasks",
                data={"title": f"soak-new-{n}"},
            )
            if reply is not None:
                self.task_ids.add(reply["instanceId"])
                self.did("creates", 1)
        elif roll < 0.2 and created:
            victim = rng.choice(created)
            if await self.write("delete", instanceType=TASK_TYPE, instanceId=victim):
                self.task_ids.discard(victim)
                self.did("deletes", 1)
        elif roll < 0.3:
            times, prefix = 5, f"soak-burst-{n}-"
            params = [small, times, prefix]
            frame = {"action": "rename_repeatedly", "params": params}
            reply = await self.request(frame, "callId", "actionResponse")
            if reply is None or reply.get("result") != times:
                self.failures.append(f"rename_repeatedly: {reply}"[:300])
            else:
                self.title = ""  # the action's own titles; the final save sets one again
                self.did("bursts", times)
        else:
            others = sorted(self.original - {small})
            target = small if roll < 0.8 or not others else rng.choice(others)
            await self.save(target, f"soak-{n}")

    async def save(self, task: int, title: str) -> None:
        if await self.write("save", instanceType=TASK_TYPE, instanceId=task, data={"title": title}):
            if task == self.world.small_task:
                self.title = title
            self.did("saves", 1)

    async def run(self, stop: asyncio.Event, rate: float, seed: int) -> None:
        rng = random.Random(seed)
        self.original = set(self.task_ids)
        due = time.monotonic()
        while not stop.is_set():
            await self.change(rng)
            due = max(due + 1 / rate, time.monotonic() - 1)  # no catching up in bursts
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
        # The last change is a plain save, so the final title is one the writer chose.
        await self.save(self.world.small_task, f"soak-final-{self.commits}")


# -- the server ------------------------------------------------------------------------


def start_logged_server(world: World, mode: Any, log: Path) -> Server:
    """``run.start_server`` with the server's stderr in ``log``: the server inherits our
    file descriptor 2, so it points at the log file while the server is started."""
    sys.stderr.flush()
    saved = os.dup(2)
    with log.open("wb") as sink:
        os.dup2(sink.fileno(), 2)
    try:
        return start_server(world, mode)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def server_log(log: Path) -> tuple[list[str], int]:
    """The server's stderr lines, and its log entries (lines not indented: a message,
    a traceback's first and last lines). uvicorn runs at ``--log-level warning`` and the
    benchmark project logs nothing below WARNING, so a healthy run writes nothing."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines, sum(not line[0].isspace() for line in lines)


def job_from_rest(server: Server, job: int) -> dict[str, Any]:
    """The job as the database has it, through the REST endpoint."""
    with urllib.request.urlopen(f"http://{server.base}/api/jobs/{job}/", timeout=60) as response:
        return json.loads(response.read())


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


# -- the run ---------------------------------------------------------------------------


async def soak(config: Config, server: Server, world: World, env: dict) -> dict[str, Any]:
    url = f"ws://{server.base}/ws/job/{world.small_job}/"
    job = await asyncio.to_thread(job_from_rest, server, world.small_job)
    rss_idle = server.rss_kib()
    progress(f"opening {config.clients} connections in {config.processes} client processes")
    crowd = await Churners.start(url, config, world, env)
    try:
        return await churn(config, server, world, crowd, job, rss_idle)
    finally:
        crowd.kill()


def sample_times(config: Config) -> Iterator[float]:
    """When to sample RSS and the counters: every 10 s (or quarter of the run), at the
    end of the warm-up and at the end."""
    interval = min(10.0, config.duration / 4)
    t = interval
    while t < config.warmup - interval / 2:
        yield t
        t += interval
    t = config.warmup
    while config.duration - t > interval / 2:
        yield t
        t += interval
    yield config.duration


async def churn(
    config: Config,
    server: Server,
    world: World,
    crowd: Churners,
    job: dict[str, Any],
    rss_idle: int,
) -> dict[str, Any]:
    ready = total(crowd.ready, "ready")
    rss_connected = server.rss_kib()
    progress(f"{ready} connected, server RSS {mib(rss_connected)}; churning")
    writer = Writer(
        await open_rx(server, world, world.small_job),
        world,
        task_ids={t["id"] for t in job["tasks"]},
        title=next(t["title"] for t in job["tasks"] if t["id"] == world.small_task),
    )
    stop = asyncio.Event()
    await crowd.ask({"churn": True})
    writing = asyncio.create_task(writer.run(stop, config.rate, config.seed))
    started = time.monotonic()
    series: list[dict[str, float]] = []
    rss_start: int | None = None
    for mark in sample_times(config):
        if writing.done():
            break
        # Pacing, not synchronisation: the crowd and the writer run on their own.
        await asyncio.wait([writing], timeout=max(0.0, mark - (time.monotonic() - started)))
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.process.returncode}")
        elapsed = time.monotonic() - started
        rss = server.rss_kib()
        if rss_start is None and elapsed >= config.warmup:
            rss_start = rss
        stats = await crowd.ask({"stats": True})
        series.append(
            {
                "t": round(elapsed, 1),
                "rss_kib": rss,
                "live": total(stats, "live"),
                "opened": total(stats, "opened"),
                "changes": writer.commits,
                "frames": total(stats, "frames"),
                "errors": total(stats, "errors"),
            }
        )
        progress(
            f"{elapsed:5.0f}/{config.duration:.0f} s: RSS {mib(rss)}, live {total(stats, 'live')}"
            f"/{config.clients}, opened {total(stats, 'opened')}, changes {writer.commits},"
            f" frames {total(stats, 'frames')}, errors {total(stats, 'errors')}"
        )
    churned_for = time.monotonic() - started
    stop.set()
    writer_error = None
    try:
        await writing
    except Exception as error:  # the writer's socket or a reply it never got
        writer_error = repr(error)
    progress(f"writer stopped after {writer.commits} changes; settling")
    settled = await crowd.ask({"settle": True})
    database = await asyncio.to_thread(job_from_rest, server, world.small_job)
    db_tasks = {t["id"]: t["title"] for t in database["tasks"]}
    expect = {"task": world.small_task, "title": writer.title, "task_ids": sorted(writer.task_ids)}
    database_agrees = (
        set(db_tasks) == writer.task_ids and db_tasks.get(world.small_task) == writer.title
    )
    progress("checking every client's state")
    checks = await crowd.ask({"check": expect})
    rss_end = server.rss_kib()
    await writer.ws.close()
    finals = await crowd.quit()
    kinds, samples = merged_errors(finals)
    if writer.failures or writer_error:
        kinds["writer"] = len(writer.failures) + (writer_error is not None)
        samples = [*samples, *writer.failures[:5], *([writer_error] if writer_error else [])]
    if rss_start is None:
        rss_start = rss_connected  # the run ended before the warm-up did
    opened = total(finals, "opened")
    return {
        "config": asdict(config),
        "churned_seconds": round(churned_for, 1),
        "rss_kib": {
            "idle": rss_idle,
            "connected": rss_connected,
            "start": rss_start,
            "end": rss_end,
            "max": max([rss_start, rss_end, *(s["rss_kib"] for s in series)]),
            "bound": RSS_BOUND,
            "growth_per_1000_opened": round((rss_end - rss_start) / max(opened, 1) * 1000, 1),
            "series": series,
        },
        "connections": {
            "clients": config.clients,
            "ready": ready,
            "opened": opened,
            "started": total(finals, "started"),
            "fresh": total(finals, "fresh"),
            "resumed": total(finals, "resumed"),
            "aborted": total(finals, "aborted"),
            "closed": total(finals, "closed"),
            "dropped": total(finals, "dropped"),
            "resyncs": total(finals, "resyncs"),
        },
        "changes": {"committed": writer.commits, **writer.counts},
        "frames_received": total(finals, "frames"),
        "records_received": total(finals, "records"),
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
        "error_samples": samples,
        "settled": all(s.get("settled") for s in settled),
        "expected": {"title": writer.title, "task_ids": sorted(writer.task_ids)},
        "database_agrees": database_agrees,
        "checks": checks,
        "converged": (
            all(s.get("settled") for s in settled)
            and database_agrees
            and all(c["converged"] for c in checks)
        ),
    }


def verdict(result: dict[str, Any]) -> list[str]:
    """Why the run failed (empty: it passed)."""
    failures = []
    if result["errors"]:
        failures.append(f"{result['errors']} errors: {result['error_kinds']}")
    if not result["converged"]:
        failures.append("the clients' states did not converge on the final state")
    rss = result["rss_kib"]
    if rss["end"] > rss["start"] * RSS_FACTOR + RSS_SLACK_KIB:
        failures.append(f"RSS grew from {mib(rss['start'])} to {mib(rss['end'])} ({RSS_BOUND})")
    if result["connections"]["opened"] <= result["config"]["clients"]:
        failures.append("no connection was reopened: the churn did not happen")
    if not result["changes"]["committed"]:
        failures.append("no change was committed")
    return failures


def print_summary(result: dict[str, Any]) -> None:
    rss, connections = result["rss_kib"], result["connections"]
    config = result["config"]
    print(
        f"\nRxDjango soak ({result['when']}, {result['mode']}): {config['clients']} clients, "
        f"{result['churned_seconds']:.0f} s, one server process (SQLite, embedded)\n"
    )
    rows = [
        ("server RSS idle", mib(rss["idle"])),
        ("server RSS with the clients", mib(rss["connected"])),
        ("server RSS after warm-up (start)", mib(rss["start"])),
        ("server RSS at the end", mib(rss["end"])),
        ("server RSS max", mib(rss["max"])),
        ("RSS growth per 1,000 opened", f"{rss['growth_per_1000_opened']} KiB"),
        ("connections opened", connections["opened"]),
        ("  fresh / resumed", f"{connections['fresh']} / {connections['resumed']}"),
        ("  aborted during start", connections["aborted"]),
        ("  closed / dropped", f"{connections['closed']} / {connections['dropped']}"),
        ("  resyncs", connections["resyncs"]),
        ("changes committed", result["changes"]["committed"]),
        ("frames received", result["frames_received"]),
        ("errors", result["errors"]),
        ("converged", "yes" if result["converged"] else "NO"),
    ]
    for name, value in rows:
        print(f"{name:<36}{value:>16}")
    for sample in result["error_samples"]:
        print(f"  {sample}")
    if not result["converged"]:
        print(f"  settled: {result['settled']}, database agrees: {result['database_agrees']}")
        print(f"  expected: {result['expected']}")
        for check in result["checks"]:
            print(f"  check: {check}")
    for line in result["server_log"][:20]:
        print(f"  server: {line}")
    print()
    if result["failures"]:
        for failure in result["failures"]:
            print(f"FAILED: {failure}")
    else:
        print(f"passed ({RSS_BOUND}, no errors, every client converged)")


def run(config: Config, mode_name: str) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with tempfile.TemporaryDirectory() as scratch:
        mode = single_mode(Path(scratch))
        # The DCRF peer of the benchmark project observes Task saves and warns (once) that
        # it does not support savepoints, which RxDjango's writes use; not our concern.
        quiet = "ignore::Warning:djangochannelsrestframework.observer.model_observer"
        mode.env["PYTHONWARNINGS"] = ",".join(
            filter(None, [os.environ.get("PYTHONWARNINGS"), quiet])
        )
        progress(f"{mode.name}: preparing the database")
        world = prepare_database(mode, 1, 0, 0)  # only the small job (10 tasks) is used
        log = Path(scratch) / "server.log"
        server = start_logged_server(world, mode, log)
        try:
            result = asyncio.run(soak(config, server, world, child_env(mode)))
        finally:
            server.process.terminate()
            server.process.wait(30)
        lines, entries = server_log(log)
    if entries:
        result["error_kinds"]["server-log"] = entries
        result["errors"] += entries
    result = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "mode": mode_name, **result}
    result["server_log"] = lines[:200]
    result["failures"] = verdict(result)
    result["passed"] = not result["failures"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Config()
    parser.add_argument("--short", action="store_true", help="the CI version: " + str(SHORT))
    parser.add_argument("--clients", type=int, help=f"connections kept ({defaults.clients})")
    parser.add_argument("--duration", type=float, help=f"seconds of churn ({defaults.duration})")
    parser.add_argument(
        "--warmup", type=float, help="seconds before the start RSS (one mean lifetime)"
    )
    parser.add_argument("--processes", type=int, help=f"client processes ({defaults.processes})")
    parser.add_argument(
        "--lifetime", type=float, help=f"mean seconds a connection stays open ({defaults.lifetime})"
    )
    parser.add_argument(
        "--off-time",
        type=float,
        help=f"max seconds closed before reconnecting ({defaults.off_time})",
    )
    parser.add_argument(
        "--resume", type=float, help=f"share of reconnects sending lastUpdate ({defaults.resume})"
    )
    parser.add_argument(
        "--abort", type=float, help=f"share of connects abandoned during start ({defaults.abort})"
    )
    parser.add_argument(
        "--drop", type=float, help=f"share of closes that drop the TCP connection ({defaults.drop})"
    )
    parser.add_argument("--rate", type=float, help=f"writer changes per second ({defaults.rate})")
    parser.add_argument("--seed", type=int, help=f"random seed ({defaults.seed})")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    chosen = {**(SHORT if args.short else {})}
    for name in Config.__dataclass_fields__:
        value = getattr(args, name)
        if value is not None:
            chosen[name] = value
    result = run(Config(**chosen), "short" if args.short else "full")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    print_summary(result)
    print(f"\nwritten to {output}")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
