"""The library's database work runs on a pool of threads (``_db_threads``).

* a write held in its database thread does not hold up another client's connection
  (admission and initial state) nor, on PostgreSQL, another socket's write (SQLite
  has one writer at a time), and the writes its socket sent after it still run after
  it, in order;
* while a call has waited ``RX_DB_QUEUE_WAIT`` seconds for a database thread, a
  client's write or action is refused at once with 503, and changes nothing; so is
  one that waited that long behind its socket's earlier requests while every thread
  was taken (not one that only its own socket's slow request held up);
* a socket with ``RX_MAX_PENDING_REQUESTS`` requests waiting gets 429 for more;
* the threads keep their connections: many writes open no more connections than
  there are threads, with Django's default ``CONN_MAX_AGE = 0``; one the database
  closed meanwhile is replaced before a call uses it (``CONN_HEALTH_CHECKS``).

A save of ``GATED_TITLE`` waits in ``JobChannel.can_save`` (``jobs.blocking``) until
the test opens the gate; the server runs in this process (``rx_live_server``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async as db
from django.db import connection
from django.db.backends.signals import connection_created
from prometheus_client import REGISTRY

from rxdjango._db_threads import in_db_thread, saturated, stop_db_threads, waiting_calls
from rxdjango.pytest_plugin import ActionFailed, ClientFactory, RxClient, WriteRefused
from rxdjango.testing import timeout

from jobs import blocking
from jobs.channels import JobChannel
from jobs.models import Task
from jobs.serializers import TaskSerializer
from support import World, make_user, until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    blocking.write_gate.clear()
    blocking.at_write_gate.clear()
    yield blocking.write_gate
    blocking.write_gate.set()  # no database thread is left waiting


async def writers(world: World, rx_client: ClientFactory, count: int) -> list[RxClient]:
    """``count`` clients of the job, each its own user (alice, bob, then staff users)."""
    tokens = [world.tokens["alice"], world.tokens["bob"]]
    for n in range(count - len(tokens)):
        tokens.append((await db(make_user)(f"staff{n}", staff=True))[1])
    path = f"/ws/job/{world.job.pk}/"
    return [await rx_client(JobChannel, path, token=token) for token in tokens[:count]]


def refusals(reason: str) -> float:
    """``rxdjango_requests_refused_total{reason}`` as Prometheus would scrape it."""
    value = REGISTRY.get_sample_value("rxdjango_requests_refused_total", {"reason": reason})
    return value or 0.0


async def title(task: Task) -> str:
    return (await db(Task.objects.get)(pk=task.pk)).title


async def test_another_sockets_write_is_not_held_up_and_each_socket_keeps_its_order(
    world, rx_client, gate
):
    alice, bob = await writers(world, rx_client, 2)
    late_token = (await db(make_user)("late", staff=True))[1]
    first, second = world.tasks[0], world.tasks[1]
    held = asyncio.ensure_future(alice.save(TaskSerializer, first.pk, {"title": GATED}))
    after = [
        asyncio.ensure_future(alice.save(TaskSerializer, first.pk, {"title": f"after {n}"}))
        for n in (1, 2)
    ]
    await until(blocking.at_write_gate.is_set)

    # A client connecting meanwhile is admitted and served its state (reads).
    path = f"/ws/job/{world.job.pk}/"
    late = await rx_client(JobChannel, path, token=late_token)
    assert {r["id"] for r in late.records(TaskSerializer)} == {t.pk for t in world.tasks}
    if connection.vendor == "postgresql":  # SQLite has one writer at a time: bob would wait
        await bob.save(TaskSerializer, second.pk, {"title": "not held up"})
        assert await title(second) == "not held up"
    assert not held.done() and not any(write.done() for write in after)

    gate.set()
    await asyncio.gather(held, *after)
    assert await title(first) == "after 2"  # held, after 1, after 2: in the order sent
    await bob.wait_for(TaskSerializer, {"id": first.pk, "title": "after 2"})


async def test_while_database_work_is_behind_writes_and_actions_are_refused_at_once(
    world, rx_client, gate, settings
):
    settings.RX_DB_THREADS = 1
    settings.RX_DB_QUEUE_WAIT = 0  # any call waiting for the thread means "behind"
    stop_db_threads()  # the next call starts the pool with the settings above
    holder, queued, refused = await writers(world, rx_client, 3)
    tasks = world.tasks
    held = asyncio.ensure_future(holder.save(TaskSerializer, tasks[0].pk, {"title": GATED}))
    await until(blocking.at_write_gate.is_set)
    waiting = asyncio.ensure_future(queued.save(TaskSerializer, tasks[1].pk, {"title": "queued"}))
    await until(lambda: waiting_calls() == 1)  # waiting for the thread the held write has
    refused_before = refusals("busy")

    with pytest.raises(WriteRefused) as write_refused:
        await refused.save(TaskSerializer, tasks[2].pk, {"title": "refused"})
    assert write_refused.value.code == 503
    assert write_refused.value.message == "the server is busy: send it again later"
    with pytest.raises(ActionFailed) as call_refused:
        await refused.call("count_tasks")
    assert call_refused.value.code == 503
    assert not held.done() and not waiting.done()
    assert refusals("busy") == refused_before + 2  # counted for the operator

    gate.set()
    await asyncio.gather(held, waiting)
    assert await title(tasks[1]) == "queued"
    assert await title(tasks[2]) == "task 2"  # the refused write changed nothing
    assert await refused.call("count_tasks") == len(tasks)  # and it works again


async def test_a_request_that_waited_while_every_thread_was_taken_is_refused_unrun(
    world, rx_client, gate, settings
):
    """Requests queue behind their socket's earlier ones, then for a thread: one that
    has waited ``RX_DB_QUEUE_WAIT`` seconds in all while every thread is still taken
    is refused when its turn comes, not run late. One that waited as long only behind
    its own socket's slow request, the threads free, runs."""
    settings.RX_DB_THREADS = 1
    # Long enough that the second write is queued behind the first well within it.
    limit = settings.RX_DB_QUEUE_WAIT = timeout(0.5)
    stop_db_threads()
    (alice,) = await writers(world, rx_client, 1)
    tasks = world.tasks
    hold, then_hold = threading.Event(), threading.Event()
    try:
        holding = asyncio.ensure_future(in_db_thread(hold.wait))  # the only thread
        await until(lambda: saturated() and not waiting_calls())  # the thread holds it
        first = asyncio.ensure_future(alice.save(TaskSerializer, tasks[0].pk, {"title": "ran"}))
        await until(lambda: waiting_calls() == 1)
        late = asyncio.ensure_future(alice.save(TaskSerializer, tasks[1].pk, {"title": "late"}))
        # The condition is time itself: the write's wait passes RX_DB_QUEUE_WAIT while
        # nothing else changes.
        await asyncio.sleep(1.2 * limit)
        # Another call takes the thread as soon as the first write leaves it.
        after = asyncio.ensure_future(in_db_thread(then_hold.wait))
        hold.set()
        await first
        with pytest.raises(WriteRefused) as refused:
            await late
        assert refused.value.code == 503
        assert refused.value.message == "the server is busy: send it again later"
    finally:
        hold.set()
        then_hold.set()
    await asyncio.gather(holding, after)
    assert await title(tasks[0]) == "ran"
    assert await title(tasks[1]) == tasks[1].title  # refused unrun

    # Behind its own socket's slow write only: the thread is free when its turn comes.
    held = asyncio.ensure_future(alice.save(TaskSerializer, tasks[2].pk, {"title": GATED}))
    await until(blocking.at_write_gate.is_set)
    behind = asyncio.ensure_future(alice.save(TaskSerializer, tasks[0].pk, {"title": "behind"}))
    await asyncio.sleep(1.2 * limit)  # as long a wait, behind its own socket only
    gate.set()
    await asyncio.gather(held, behind)
    assert await title(tasks[0]) == "behind"


async def test_a_socket_with_too_many_requests_waiting_gets_429(world, rx_client, gate, settings):
    settings.RX_MAX_PENDING_REQUESTS = 2
    (alice,) = await writers(world, rx_client, 1)
    task = world.tasks[0]
    held = asyncio.ensure_future(alice.save(TaskSerializer, task.pk, {"title": GATED}))
    await until(blocking.at_write_gate.is_set)
    for n in range(2):  # two writes wait behind it, sent in this order before the next
        await alice.send(
            {
                "type": "write",
                "writeId": 1000 + n,
                "operation": "save",
                "instanceType": alice.instance_type(TaskSerializer),
                "instanceId": task.pk,
                "data": {"title": f"waits {n}"},
            }
        )
    with pytest.raises(WriteRefused) as write_refused:
        await alice.save(TaskSerializer, task.pk, {"title": "one too many"})
    assert write_refused.value.code == 429
    with pytest.raises(ActionFailed) as call_refused:
        await alice.call("count_tasks")
    assert call_refused.value.code == 429

    gate.set()
    await held
    await alice.wait_for(TaskSerializer, {"id": task.pk, "title": "waits 1"})
    assert await title(task) == "waits 1"


async def test_database_threads_keep_their_connections(world, rx_client, settings):
    settings.RX_DB_THREADS = 2
    stop_db_threads()
    opened: list[str] = []

    def count(sender, connection, **kwargs) -> None:
        if threading.current_thread().name.startswith("rxdjango-db-"):
            opened.append(threading.current_thread().name)

    max_age = connection.settings_dict["CONN_MAX_AGE"]
    connection.settings_dict["CONN_MAX_AGE"] = 0  # Django's default: a connection per request
    connection_created.connect(count)
    try:
        (alice,) = await writers(world, rx_client, 1)
        for n in range(20):
            await alice.save(TaskSerializer, world.tasks[0].pk, {"title": f"save {n}"})
    finally:
        connection_created.disconnect(count)
        connection.settings_dict["CONN_MAX_AGE"] = max_age
    # Each thread opened one connection and kept it (a connection per call: 20 or more).
    assert 1 <= len(opened) <= 2, opened
    assert len(set(opened)) == len(opened)


GATED = blocking.GATED_TITLE


@pytest.mark.postgresql_only  # SQLite has no server to end a session (is_usable is True)
async def test_a_kept_connection_the_database_closed_is_replaced_before_use(
    world, rx_client, settings
):
    settings.RX_DB_THREADS = 1
    stop_db_threads()
    (alice,) = await writers(world, rx_client, 1)
    await alice.save(TaskSerializer, world.tasks[0].pk, {"title": "before"})
    kept = await in_db_thread(lambda: connection.connection)
    assert kept is not None
    health_checks = connection.settings_dict["CONN_HEALTH_CHECKS"]
    connection.settings_dict["CONN_HEALTH_CHECKS"] = True
    try:
        await db(terminate)(kept.info.backend_pid)  # the server ends the thread's session
        await alice.save(TaskSerializer, world.tasks[0].pk, {"title": "after"})
        assert await in_db_thread(lambda: connection.connection) is not kept
    finally:
        connection.settings_dict["CONN_HEALTH_CHECKS"] = health_checks
    assert await title(world.tasks[0]) == "after"


def terminate(backend_pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend_pid])


async def test_writes_of_many_sockets_at_once_all_succeed(world, rx_client, settings):
    """Many sockets write at once, each a few times. On SQLite (one writer at a time)
    in Django's default DEFERRED mode, a transaction that has read and then writes
    fails at once ("database is locked") when another wrote meanwhile: the library's
    writes of one process take turns on the file instead, in any mode."""
    settings.RX_DB_QUEUE_WAIT = None  # they wait for each other's rows: never refused
    options = connection.settings_dict["OPTIONS"]
    mode = options.get("transaction_mode")
    if connection.vendor == "sqlite":
        options["transaction_mode"] = "DEFERRED"
    stop_db_threads()  # the threads connect again, with these options
    try:
        clients = await writers(world, rx_client, 4)
        task_pks = [task.pk for task in world.tasks]
        saves = [
            client.save(TaskSerializer, task_pks[n % len(task_pks)], {"title": f"{c}-{n}"})
            for c, client in enumerate(clients)
            for n in range(10)
        ]
        await asyncio.gather(*saves)  # a failed write raises WriteRefused (500)
    finally:
        options["transaction_mode"] = mode
        stop_db_threads()
