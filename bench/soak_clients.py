"""A soak client process: many RxDjango connections to one anchor, opening and closing.

Started by ``soak.py`` with the benchmark project's environment. Django is set up only
so that ``rxdjango.testing.ClientState`` can rebuild each connection's state from its
frames the way a browser does; nothing here touches the database.

Arguments: the anchor's ``ws://`` URL, the number of connections, and JSON options:
``token``, ``lifetime`` (mean seconds a connection stays open), ``off_time`` (at most
this many seconds closed before reconnecting), ``resume`` (probability that a
reconnect sends ``lastUpdate``), ``abort`` (probability that a connection gives up
during its start sequence), ``drop`` (probability that a close drops the TCP
connection instead of the closing handshake) and ``seed``.

Prints ``{"ready": n}`` once every connection has its initial state, then answers
commands read from stdin, one JSON line each, with one JSON line:

* ``{"churn": true}``: every connection starts cycling: open for a random time
  (exponential, mean ``lifetime``), closed for up to ``off_time``, open again;
* ``{"stats": true}``: the counters so far;
* ``{"settle": true}``: stop cycling; answers once every connection is open again
  and past its end marker (or after a deadline);
* ``{"check": {"task": id, "title": t, "task_ids": [...]}}``: open a fresh reference
  connection and wait (with a deadline) until it holds that title and those task ids
  and every connection's rebuilt tree equals its tree;
* ``{"quit": true}``: close everything and answer with the final counters.

Errors are counted, never raised: a failed connect, an auth reply other than 200, a
socket the server closed, an ``error`` or ``maintenance`` frame, a start sequence
that does not reach its end marker in time, and any other exception.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import django
import websockets

django.setup()

from rxdjango import _codec  # noqa: E402
from rxdjango.testing import ClientState  # noqa: E402

from jobs.channels import JobChannel  # noqa: E402

AUTH_OK = {"type": "auth", "statusCode": 200}
#: seconds a connection may take from the TCP connect to its end marker
START_DEADLINE = 60.0
#: seconds ``settle`` and ``check`` wait for every connection
SETTLE_DEADLINE = 120.0
CHECK_DEADLINE = 60.0
WAVE = 50  # connections opened at once at the start, like a crowd arriving


class Browser(ClientState):
    """The reference client state, without the logs of every frame it applied
    (they would grow for the whole run)."""

    def apply(self, frame: Any) -> None:
        super().apply(frame)
        self.received.clear()
        self.controls.clear()
        self.notifications.clear()


class Tally:
    """This process's counters and a few error samples."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples: list[str] = []
        self.quitting = False

    def error(self, kind: str, detail: Any) -> None:
        if self.quitting:
            return
        self.errors[kind] += 1
        if len(self.samples) < 20:
            self.samples.append(f"{kind}: {detail!r}"[:300])

    def report(self, clients: list[Client]) -> dict[str, Any]:
        return {
            **self.counts,
            "live": sum(client.live for client in clients),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "error_samples": self.samples,
        }


class Client:
    """One browser tab: a connection that is opened, used and closed again and again."""

    def __init__(self, url: str, token: str, tally: Tally) -> None:
        self.url = url
        self.token = token
        self.tally = tally
        self.state = Browser(JobChannel)
        #: the state went through a whole start sequence (so ``lastUpdate`` is usable)
        self.complete = False
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.live = False  # open and past its end marker
        self.closing = False  # this side is closing the socket
        self.lost = asyncio.Event()  # the reader stopped

    def take(self, frame: Any) -> None:
        counts = self.tally.counts
        counts["frames"] += 1
        if isinstance(frame, list):
            counts["records"] += len(frame)
        elif isinstance(frame, dict):
            kind = frame.get("type")
            if kind == "resync":
                counts["resyncs"] += 1
            elif kind in ("error", "maintenance") or (kind == "auth" and frame != AUTH_OK):
                self.tally.error(f"{kind}-frame", frame)
        self.state.apply(frame)

    async def connect(self, resume: bool, abort: str | None = None) -> bool:
        """Open the socket and read the start sequence; True once live.

        Resumes (sends ``lastUpdate``) only from a state that had reached its end
        marker, as a browser would. ``abort``: give up right after the socket opens
        (``"before-auth"``) or right after sending the auth frame (``"after-auth"``).
        """
        counts = self.tally.counts
        resume = resume and self.complete and self.state.last_update is not None
        if not resume:
            self.state = Browser(JobChannel)
        self.complete = False
        self.closing = False
        self.lost = asyncio.Event()
        counts["attempts"] += 1
        try:
            self.ws = await websockets.connect(
                self.url,
                max_size=2**24,
                open_timeout=START_DEADLINE,
                ping_interval=None,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
            self.tally.error("connect", error)
            return False
        counts["opened"] += 1
        counts["resumed" if resume else "fresh"] += 1
        auth = {"token": self.token, "lastUpdate": self.state.last_update if resume else None}
        try:
            if abort:
                if abort == "after-auth":
                    await self.ws.send(_codec.encode(auth))
                counts["aborted"] += 1
                self.closing = True
                await self.ws.close()
                return False
            async with asyncio.timeout(START_DEADLINE):
                await self.ws.send(_codec.encode(auth))
                reply = _codec.decode(await self.ws.recv())
                self.take(reply)  # counts a refusal as an error
                if reply != AUTH_OK:
                    self.closing = True
                    await self.ws.close()
                    return False
                markers = self.state.end_markers
                while self.state.end_markers == markers:
                    self.take(_codec.decode(await self.ws.recv()))
        except websockets.ConnectionClosed as closed:
            if not self.closing:
                self.tally.error("closed-during-start", closed.rcvd and closed.rcvd.code)
            return False
        except TimeoutError:
            self.tally.error("start-timeout", self.url)
            self.closing = True
            self.ws.transport.abort()
            return False
        self.complete = True
        self.live = True
        counts["started"] += 1
        self.reader = asyncio.create_task(self.read())
        return True

    async def read(self) -> None:
        """Apply live frames until the socket closes."""
        ws, lost = self.ws, self.lost
        try:
            async for text in ws:
                self.take(_codec.decode(text))
        except websockets.ConnectionClosed:
            pass
        except Exception as error:
            self.tally.error("reader", error)
        finally:
            if ws is self.ws:
                self.live = False
                if not self.closing:
                    self.tally.error("closed-by-server", ws.close_code)
            lost.set()

    async def close(self, drop: bool) -> None:
        """Close cleanly, or (``drop``) abort the TCP connection like a killed tab."""
        self.closing = True
        self.live = False
        if drop:
            self.tally.counts["dropped"] += 1
            self.ws.transport.abort()
        else:
            self.tally.counts["closed"] += 1
            await self.ws.close()
        if self.reader is not None:
            await self.reader


async def first(*awaitables: Any) -> None:
    """Wait until the first of ``awaitables`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def life(client: Client, options: dict[str, Any], settle: asyncio.Event) -> None:
    """Open, live, close, wait, again; once ``settle`` is set, stay open."""
    rng = random.Random(options["seed"])
    while True:
        try:
            if not client.live:
                churning = not settle.is_set()
                resume = rng.random() < options["resume"]
                abort = None
                if churning and rng.random() < options["abort"]:
                    abort = rng.choice(("before-auth", "after-auth"))
                if not await client.connect(resume, abort):
                    await asyncio.sleep(rng.uniform(0, options["off_time"]))
                    continue
            if settle.is_set():
                await client.lost.wait()  # only if the server closes it (an error)
                continue
            lifetime = rng.expovariate(1 / options["lifetime"])
            await first(asyncio.sleep(lifetime), client.lost.wait(), settle.wait())
            if not client.live or settle.is_set():
                continue
            await client.close(drop=rng.random() < options["drop"])
            await first(asyncio.sleep(rng.uniform(0, options["off_time"])), settle.wait())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            client.tally.error("exception", error)
            client.live = False
            await asyncio.sleep(rng.uniform(0, options["off_time"]))


def summary(tree: Any, task: int) -> dict[str, Any] | None:
    """The title of ``task`` and the task ids of a job tree."""
    if not isinstance(tree, dict):
        return None
    tasks = tree.get("tasks") or []
    titles = [t.get("title") for t in tasks if t.get("id") == task]
    return {
        "title": titles[0] if titles else None,
        "task_ids": sorted(t["id"] for t in tasks),
    }


def tree_of(client: Client) -> Any:
    if not client.live or not client.state.anchors:
        return None
    return client.state.tree()


async def check(
    url: str, token: str, tally: Tally, clients: list[Client], expect: dict
) -> dict[str, Any]:
    """Poll until a fresh reference connection holds ``expect`` and every client's tree
    equals the reference tree, or until the deadline."""
    reference = Client(url, token, tally)
    await reference.connect(resume=False)
    deadline = time.monotonic() + CHECK_DEADLINE
    wanted = {"title": expect["title"], "task_ids": sorted(expect["task_ids"])}
    while True:
        expected_tree = tree_of(reference)
        reference_ok = summary(expected_tree, expect["task"]) == wanted
        mismatched = [c for c in clients if tree_of(c) != expected_tree]
        if (reference_ok and not mismatched) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    answer = {
        "converged": reference_ok and not mismatched,
        "clients": len(clients),
        "mismatched": len(mismatched),
        "not_live": sum(not c.live for c in clients),
        "reference": summary(expected_tree, expect["task"]),
        "sample_mismatch": summary(tree_of(mismatched[0]), expect["task"]) if mismatched else None,
    }
    if reference.live:
        await reference.close(drop=False)
    return answer


async def main() -> None:
    url, count, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    tally = Tally()
    clients = [Client(url, options["token"], tally) for _ in range(count)]
    for start in range(0, count, WAVE):
        await asyncio.gather(*(c.connect(resume=False) for c in clients[start : start + WAVE]))
    print(json.dumps({"ready": sum(c.live for c in clients)}), flush=True)

    settle = asyncio.Event()
    lives: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if "churn" in command:
            lives = [
                asyncio.create_task(
                    life(c, {**options, "seed": options["seed"] * 100003 + i}, settle)
                )
                for i, c in enumerate(clients)
            ]
            answer: dict[str, Any] = {"churning": len(lives)}
        elif "stats" in command:
            answer = tally.report(clients)
        elif "settle" in command:
            settle.set()
            deadline = time.monotonic() + SETTLE_DEADLINE
            while not all(c.live for c in clients) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            answer = {"settled": all(c.live for c in clients), **tally.report(clients)}
        elif "check" in command:
            answer = await check(url, options["token"], tally, clients, command["check"])
        else:
            break
        print(json.dumps(answer), flush=True)

    tally.quitting = True  # what happens while closing down is not an error
    for task in lives:
        task.cancel()
    await asyncio.gather(*lives, return_exceptions=True)
    live = [c for c in clients if c.live]
    await asyncio.gather(*(c.close(drop=False) for c in live), return_exceptions=True)
    print(json.dumps(tally.report(clients)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
