"""Restarting a server process while clients write: SIGTERM drains before it stops.

Two uvicorn processes on the Redis backend; clients write to one of them without
pause, it gets SIGTERM, and they move to the other, as a load balancer would send
them. Every write gets a reply or was never applied, none is applied twice, the
requests running at the signal finish with their reply, and every client converges.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
import websockets
from channels.db import database_sync_to_async as db

from rxdjango.testing import timeout

from jobs.models import Task
from jobs.serializers import JobSerializer
from support import (
    JOB,
    TASK,
    SocketClient,
    converges,
    expected_state,
    running_server,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.own_backend]

REPLIES = ("actionResponse", "writeResponse")


def create_task(write_id: str, job_pk: int) -> str:
    frame = {
        "type": "write",
        "writeId": write_id,
        "operation": "create",
        "instanceType": TASK,
        "parentType": JOB,
        "parentId": job_pk,
        "relationName": "tasks",
        "data": {"title": write_id},
    }
    return orjson.dumps(frame).decode()


async def reply_to(client: SocketClient, kind: str, key: str, value: Any) -> dict:
    """Frames read (and applied) until the reply whose ``key`` is ``value``."""
    while True:
        frame = await client.read(3)
        if isinstance(frame, dict) and frame.get("type") == kind and frame.get(key) == value:
            return frame


class Writer:
    """Creates tasks one after another; moves to ``fallback`` when its server restarts."""

    def __init__(self, name: str, url: str, fallback: str, token: str, job_pk: int) -> None:
        self.name, self.fallback, self.job_pk = name, fallback, job_pk
        self.client = SocketClient(url, token)
        self.replies: dict[str, dict | None] = {}  # write id -> its reply (None: none came)
        self.close_codes: list[int] = []

    async def run(self, stop: asyncio.Event) -> None:
        await self.client.open()
        count = 0
        while not stop.is_set():
            count += 1
            write_id = f"{self.name}-{count}"
            self.replies[write_id] = None
            try:
                await self.client.ws.send(create_task(write_id, self.job_pk))
                reply = await reply_to(self.client, "writeResponse", "writeId", write_id)
                self.replies[write_id] = reply
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                self.close_codes.append(closed.rcvd.code)
                await self.client.open(self.fallback)

    def outcomes(self) -> dict[str, set[str]]:
        sorted_out: dict[str, set[str]] = {"confirmed": set(), "refused": set(), "silent": set()}
        for write_id, reply in self.replies.items():
            if reply is None:
                sorted_out["silent"].add(write_id)
            elif reply["success"]:
                sorted_out["confirmed"].add(write_id)
            else:
                assert reply["error"]["code"] == 503, reply
                sorted_out["refused"].add(write_id)
        return sorted_out


async def confirmed_by_each(writers: list[Writer]) -> None:
    """Until every writer has one more write confirmed than now (read on this loop,
    where the writers run)."""

    def confirmed() -> list[int]:
        return [len(w.outcomes()["confirmed"]) for w in writers]

    marks = confirmed()
    deadline = time.monotonic() + timeout(3)
    while not all(now > mark for now, mark in zip(confirmed(), marks, strict=True)):
        assert time.monotonic() < deadline, "a writer got no write confirmed"
        await asyncio.sleep(0.01)


def health_of(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout(1)) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as answered:
        return answered.code, orjson.loads(answered.read())


async def test_a_restart_under_writes_answers_every_request_and_clients_converge(
    world, shared_redis
):
    env = shared_redis.server_env(RX_TEST_SHUTDOWN_TIMEOUT="10")  # the default
    path = f"/ws/job/{world.job.pk}/"
    stop = asyncio.Event()
    with (
        running_server(env) as doomed,
        running_server(env) as survivor,
        shared_redis.settings(),
    ):
        writers = [
            Writer(f"w{i}", f"{doomed}{path}", f"{survivor}{path}", token, world.job.pk)
            for i, token in enumerate([world.tokens["alice"], world.tokens["bob"]] * 2)
        ]
        running = [asyncio.ensure_future(w.run(stop)) for w in writers]
        await confirmed_by_each(writers)  # the writers are writing

        # Requests running at the signal: a detached action that sleeps, and an ordinary
        # one that commits renames, with a write queued behind it on the same socket.
        busy = SocketClient(f"{doomed}{path}", world.tokens["alice"])
        await busy.open()
        # The detached action outlasts the checks below: until it ends the server
        # drains, and answers new sockets with 1012 (it began before the renames, whose
        # first reaches this client only after them, a second or so on a busy machine).
        await busy.ws.send(orjson.dumps({"callId": 1, "action": "linger", "params": [3.0]}))
        task = world.tasks[0].pk
        renames = {"callId": 2, "action": "rename_repeatedly", "params": [task, 20, "r"]}
        await busy.ws.send(orjson.dumps(renames).decode())
        await busy.ws.send(create_task("queued", world.job.pk))
        await busy.records_until(lambda r: str(r.get("title", "")).startswith("r0"))

        doomed.process.send_signal(signal.SIGTERM)
        health = doomed.url.replace("ws://", "http://") + "/rxdjango/health/"
        assert await asyncio.to_thread(health_of, health) == (
            503,
            {"status": "unavailable", "reasons": ["shutting down"]},
        )
        # A socket opened while it drains is sent elsewhere at once.
        late = await websockets.connect(f"{doomed}{path}")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(late.recv(), timeout(1))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012

        # What ran finished with its reply; what waited was refused; then 1012.
        answers = {}
        with contextlib.suppress(websockets.ConnectionClosed):
            while len(answers) < 3:
                frame = await busy.read(3)
                if isinstance(frame, dict) and frame.get("type") in (
                    "actionResponse",
                    "writeResponse",
                ):
                    answers[frame.get("callId", frame.get("writeId"))] = frame
        assert answers[1] == {"type": "actionResponse", "callId": 1, "result": 3.0}
        assert answers[2] == {"type": "actionResponse", "callId": 2, "result": 20}
        assert answers["queued"]["success"] is False
        assert answers["queued"]["error"]["code"] == 503
        assert await busy.close_code() == 1012
        # It stopped (uvicorn ends by raising the signal it handled again: -SIGTERM).
        assert doomed.process.wait(timeout(3)) in (0, -signal.SIGTERM)

        await confirmed_by_each(writers)  # the writers write to the survivor
        stop.set()
        await asyncio.gather(*running)

        created = await db(
            lambda: collections.Counter(
                Task.objects.filter(job=world.job).values_list("title", flat=True)
            )
        )()
        assert "queued" not in created
        assert (await db(Task.objects.get)(pk=task)).title == "r00019".ljust(100, "-")
        for writer in writers:
            assert writer.close_codes == [1012], writer.close_codes
            outcome = writer.outcomes()
            assert outcome["confirmed"] and len(outcome["silent"]) <= 1
            mine = {title for title in created if title.startswith(f"{writer.name}-")}
            # Confirmed writes are there once; refused and unanswered ones are not.
            assert mine == outcome["confirmed"]
            assert all(created[title] == 1 for title in mine)
            user = world.alice if writer.client.token == world.tokens["alice"] else world.bob
            expected = await db(expected_state)(JobSerializer, world.job, user)
            await converges(writer.client.read, writer.client.state, lambda e=expected: e)
            await writer.client.close()
