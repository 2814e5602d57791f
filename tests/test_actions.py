"""@action methods: typed parameters, errors that keep the socket, detached calls."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import threading
import time
import uuid
from typing import Literal, TypedDict

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.urls import path

from rxdjango.actions import action
from rxdjango.channels import ContextChannel
from rxdjango.exceptions import ActionError, ChannelDeclarationError
from rxdjango.testing import ChannelCommunicator, timeout

from jobs.models import Task
from jobs.serializers import JobSerializer
from support import connect

pytestmark = pytest.mark.django_db(transaction=True)


class Spec(TypedDict):
    name: str
    size: int


class Flags(TypedDict, total=False):
    urgent: bool


probe: dict = {}


class ActionJobChannel(ContextChannel):
    class Meta:
        state = JobSerializer()

    @action
    async def echo_types(
        self,
        count: int,
        ratio: float,
        name: str,
        flag: bool,
        tags: list[str],
        scores: dict[str, int],
        maybe: int | None,
        when: datetime.datetime,
        day: datetime.date,
        price: decimal.Decimal,
        ident: uuid.UUID,
        spec: Spec,
        mode: Literal["fast", "slow"] = "fast",
        flags: Flags | None = None,
    ) -> dict:
        values = [
            count,
            ratio,
            name,
            flag,
            tags,
            scores,
            maybe,
            when,
            day,
            price,
            ident,
            spec,
            mode,
        ]
        return {
            "types": [type(v).__name__ for v in values],
            "when_year": when.year,
            "day_plus_one": day + datetime.timedelta(days=1),
            "price_doubled": price * 2,
            "ident": ident,
            "flags": flags,
        }

    @action
    async def explode(self) -> None:
        raise KeyError("internal detail that must not leak")

    @action
    async def refuse(self) -> None:
        raise ActionError("the job is closed", status=409)

    @action
    async def add(self, a: int, b: int = 10) -> int:
        return a + b

    @action
    async def rename_task(self, task_id: int, title: str) -> str:
        def rename():
            task = Task.objects.get(pk=task_id, job_id=self.kwargs["job_id"])
            task.title = title
            task.save()

        await db(rename)()
        return "done"

    @action(detached=True)
    async def wait_for_release(self) -> str:
        probe["released"] = asyncio.Event()
        probe["waiting"].set()
        try:
            await asyncio.wait_for(probe["released"].wait(), timeout())
            return "released"
        except asyncio.CancelledError:
            probe["cancelled"].set()
            raise

    @action
    async def release(self) -> str:
        probe["released"].set()
        return "ok"

    @action
    async def wait_briefly(self) -> bool:
        probe["flag"] = asyncio.Event()
        try:
            await asyncio.wait_for(probe["flag"].wait(), timeout(0.05))
            return True
        except TimeoutError:
            return False

    @action
    async def set_flag(self) -> str:
        probe["flag"].set()
        return "set"

    async def not_an_action(self) -> str:
        return "secret"


application = URLRouter([path("actions/<int:job_id>/", ActionJobChannel.as_asgi())])


async def client_for(world) -> ChannelCommunicator:
    return await connect(
        application, f"/actions/{world.job.pk}/", world.tokens["alice"], channel=ActionJobChannel
    )


async def call(client, call_id, name, params=None, **extra):
    await client.send_frame({"callId": call_id, "action": name, "params": params or [], **extra})


async def reply_to(client, call_id):
    while True:
        frame = await client.receive_frame()
        if isinstance(frame, dict) and frame.get("callId") == call_id:
            return frame


GOOD = [
    3,
    0.5,
    "n",
    True,
    ["a"],
    {"x": 1},
    None,
    "2026-02-03T04:05:06+00:00",
    "2026-02-28",
    "10.25",
    "12345678-1234-5678-1234-567812345678",
    {"name": "s", "size": 2},
    "slow",
]


async def test_parameters_are_checked_and_converted(world):
    client = await client_for(world)
    await call(client, 1, "echo_types", GOOD)
    reply = await reply_to(client, 1)
    assert reply["type"] == "actionResponse"
    result = reply["result"]
    assert result["types"] == [
        "int",
        "float",
        "str",
        "bool",
        "list",
        "dict",
        "NoneType",
        "datetime",
        "date",
        "Decimal",
        "UUID",
        "dict",
        "str",
    ]
    assert result["when_year"] == 2026
    assert result["day_plus_one"] == "2026-03-01"
    assert result["price_doubled"] == "20.50"
    assert result["ident"] == "12345678-1234-5678-1234-567812345678"
    await call(client, 2, "add", {"a": 1})
    assert (await reply_to(client, 2))["result"] == 11
    await call(client, 3, "echo_types", [*GOOD[:12], "fast", {"urgent": True}], type="action")
    assert (await reply_to(client, 3))["result"]["flags"] == {"urgent": True}
    await client.disconnect()


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, "3", "parameter 'count': expected an integer, got string"),
        (0, True, "parameter 'count': expected an integer, got boolean"),
        (1, "x", "parameter 'ratio'"),
        (3, 1, "parameter 'flag': expected a boolean"),
        (4, ["a", 2], "parameter 'tags[1]': expected a string"),
        (5, {"x": "1"}, "parameter 'scores.x'"),
        (6, "none", "parameter 'maybe'"),
        (7, "yesterday", "parameter 'when': expected a datetime"),
        (8, "2026-02-30", "parameter 'day'"),
        (9, "ten", "parameter 'price'"),
        (9, "NaN", "parameter 'price'"),
        (10, "not-a-uuid", "parameter 'ident'"),
        (11, {"name": "s"}, "parameter 'spec': missing key(s) size"),
        (11, {"name": "s", "size": 1, "x": 0}, "parameter 'spec': unknown key(s) x"),
        (12, "medium", "parameter 'mode'"),
    ],
)
async def test_mismatched_parameters_answer_400_naming_the_parameter(world, index, value, message):
    client = await client_for(world)
    params = list(GOOD)
    params[index] = value
    await call(client, 7, "echo_types", params)
    reply = await reply_to(client, 7)
    assert reply["error"]["code"] == 400
    assert message in reply["error"]["message"]
    await client.disconnect()


async def test_arity_and_frame_shape_errors(world):
    client = await client_for(world)
    await call(client, 1, "add", [])
    assert (await reply_to(client, 1))["error"] == {"code": 400, "message": "missing parameter 'a'"}
    await call(client, 2, "add", [1, 2, 3])
    assert (await reply_to(client, 2))["error"]["code"] == 400
    await client.send_frame({"callId": 3, "action": "add", "params": "1"})
    assert (await reply_to(client, 3))["error"]["message"] == "params must be a list"
    await client.send_frame({"action": "add", "params": [1]})
    reply = await client.receive_frame()
    assert reply == {
        "type": "error",
        "error": {"code": 400, "message": "an action call needs an integer callId"},
    }
    await client.disconnect()


@pytest.mark.parametrize(
    "name", ["not_an_action", "has_permission", "on_connect", "__init__", "send", "nope", 5]
)
async def test_unknown_and_non_action_methods_answer_403(world, name):
    client = await client_for(world)
    await call(client, 9, name)
    reply = await reply_to(client, 9)
    assert reply["error"]["code"] == 403
    await client.disconnect()


@pytest.mark.rx_errors_expected
async def test_an_action_error_keeps_the_socket_usable(world, caplog):
    client = await client_for(world)
    await call(client, 1, "explode")
    reply = await reply_to(client, 1)
    assert reply["error"] == {"code": 500, "message": "internal error"}
    assert "internal detail" not in repr(reply)
    assert "internal detail that must not leak" in caplog.text
    await call(client, 2, "refuse")
    assert (await reply_to(client, 2))["error"] == {"code": 409, "message": "the job is closed"}
    await call(client, 3, "add", [1, 2])
    assert (await reply_to(client, 3))["result"] == 3
    await client.disconnect()


async def test_an_idle_connection_holds_no_task_of_its_own(world):
    """What one idle connection holds, a process holds 10,000 times: frames are sent in
    the pass that queues them (a writer task runs only while a send waits); timers,
    not tasks, watch for a stalled peer and re-check access; the call worker runs only
    while calls wait (and the layer is listened to only in a group)."""
    first = await client_for(world)  # anything process-wide starts with the first
    before = len(asyncio.all_tasks())
    clients = [await client_for(world) for _ in range(5)]
    # Each: the task running the application (the test's communicator), nothing more.
    assert len(asyncio.all_tasks()) - before == 5

    async def settled() -> int:
        """Tasks added, once the call worker that sent the last reply has ended."""
        deadline = time.monotonic() + timeout()
        while len(asyncio.all_tasks()) - before != 5 and time.monotonic() < deadline:
            await asyncio.sleep(0)  # the worker ends in a pass right after its reply
        return len(asyncio.all_tasks()) - before

    await call(clients[0], 1, "add", [1, 2])
    await call(clients[0], 2, "add", [3, 4])
    assert (await reply_to(clients[0], 1))["result"] == 3
    assert (await reply_to(clients[0], 2))["result"] == 7
    assert await settled() == 5, "the call worker ends when no call waits"
    await call(clients[0], 3, "add", [5, 6])  # and starts again with the next one
    assert (await reply_to(clients[0], 3))["result"] == 11
    assert await settled() == 5
    for client in [first, *clients]:
        await client.disconnect()


async def test_frames_are_served_while_sync_code_holds_asgirefs_thread(world):
    """asgiref runs thread-sensitive sync code (a view's, a hook's) on one thread per
    process. The library's database work has threads of its own, so no frame waits
    for that one: a socket is served while sync code holds it. (Channels' own
    dispatch first closes that thread's old connections, on it, for every frame.)"""
    client = await client_for(world)
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(timeout(5))

    holding = asyncio.ensure_future(sync_to_async(hold)())  # thread_sensitive: the one thread
    try:
        assert await asyncio.to_thread(started.wait, timeout()), "the thread was never held"
        await call(client, 1, "add", [1, 2])
        reply = await asyncio.wait_for(reply_to(client, 1), timeout())
        assert reply["result"] == 3
        assert not holding.done(), "the reply came while the thread was held"
    finally:
        release.set()
        await holding
    await client.disconnect()


async def test_detached_action_does_not_hold_up_later_calls(world):
    probe.clear()
    probe["waiting"], probe["cancelled"] = asyncio.Event(), asyncio.Event()
    client = await client_for(world)
    await call(client, 1, "wait_for_release")
    await asyncio.wait_for(probe["waiting"].wait(), timeout())
    await call(client, 2, "release")  # would deadlock if the first call blocked the socket
    first = await client.receive_frame()
    second = await client.receive_frame()
    assert [first["callId"], second["callId"]] == [2, 1]
    assert second["result"] == "released"
    await client.disconnect()


async def test_ordinary_actions_run_one_at_a_time_in_order(world):
    probe.clear()
    client = await client_for(world)
    await call(client, 1, "wait_briefly")
    await call(client, 2, "set_flag")
    first = await client.receive_frame()
    second = await client.receive_frame()
    # set_flag could not run while wait_briefly was waiting for it.
    assert (first["callId"], first["result"]) == (1, False)
    assert (second["callId"], second["result"]) == (2, "set")
    await client.disconnect()


async def test_calls_in_flight_are_cancelled_when_the_socket_closes(world):
    probe.clear()
    probe["waiting"], probe["cancelled"] = asyncio.Event(), asyncio.Event()
    client = await client_for(world)
    await call(client, 1, "wait_for_release")
    await asyncio.wait_for(probe["waiting"].wait(), timeout())
    await client.disconnect()
    await asyncio.wait_for(probe["cancelled"].wait(), timeout())


async def test_orm_changes_made_in_an_action_broadcast_before_the_reply(world):
    client = await client_for(world)
    watcher = await connect(
        application, f"/actions/{world.job.pk}/", world.tokens["bob"], channel=ActionJobChannel
    )
    task = world.tasks[0]
    await call(client, 1, "rename_task", [task.pk, "renamed by action"])
    update = await client.receive_frame()
    assert isinstance(update, list) and update[0]["title"] == "renamed by action"
    assert (await client.receive_frame()) == {
        "type": "actionResponse",
        "callId": 1,
        "result": "done",
    }
    assert (await watcher.receive_records())[0]["title"] == "renamed by action"
    await client.disconnect()
    await watcher.disconnect()


def test_sync_actions_are_refused_at_import_time():
    with pytest.raises(ChannelDeclarationError, match="async def"):

        class SyncAction(ContextChannel):
            class Meta:
                abstract = True

            @action
            def not_async(self):
                return 1

    with pytest.raises(ChannelDeclarationError, match="async def"):

        @action(detached=True)
        def also_not_async(self):
            return 1
