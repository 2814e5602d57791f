"""Every committed change reaches clients, whatever made it: capture at the database.

Clients are connected; then a change is made in a way no model signal sees
(``QuerySet.update``, ``bulk_create``, ``bulk_update``, raw SQL on a table or on an M2M
through table, a move between anchors in SQL) or by another process. The watching
client and a client that connects afterwards must converge to the serializer's output
read fresh. Runs on both backends and both databases (the suite's passes).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import pytest
from channels.db import database_sync_to_async as db
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection, connections, models

from rxdjango import _metrics
from rxdjango._backends.redis_keys import Keys
from rxdjango._capture import LOG_TABLE, _pg_function_name, install_triggers
from rxdjango._drain import _batches, _drain_lock
from rxdjango._relay import enforce_retention, stop_relays
from rxdjango.models import CapturedChange
from rxdjango.testing import timeout

from jobs.channels import JobChannel
from jobs.models import Task
from support import (
    SocketClient,
    World,
    connect,
    converges,
    job_state,
    receive,
    run_command,
    running_server,
    until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _update(world: World) -> None:
    Task.objects.filter(job=world.job).update(title="renamed by update()")


def _bulk_create(world: World) -> None:
    Task.objects.bulk_create([Task(job=world.job, title=f"bulk {i}") for i in range(3)])


def _bulk_update(world: World) -> None:
    tasks = list(Task.objects.filter(job=world.job))
    for task in tasks:
        task.done = True
    Task.objects.bulk_update(tasks, ["done"])


def _table(model: type) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _raw_update(world: World) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(Task)} SET title = %s WHERE id = %s", ["raw", world.tasks[1].pk]
        )


def _raw_insert(world: World) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(Task)} (job_id, title, done) VALUES (%s, %s, %s)",
            [world.job.pk, "inserted in SQL", False],
        )


def _raw_delete(world: World) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_table(Task)} WHERE id = %s", [world.tasks[2].pk])


def _raw_m2m(world: World) -> None:
    through = Task.labels.through
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(through)} (task_id, label_id) VALUES (%s, %s)",
            [world.tasks[1].pk, world.labels[1].pk],
        )
        cursor.execute(f"DELETE FROM {_table(through)} WHERE task_id = %s", [world.tasks[0].pk])


def _raw_move(world: World) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(Task)} SET job_id = %s WHERE id = %s",
            [world.other_job.pk, world.tasks[1].pk],
        )


WRITES: dict[str, Callable[[World], None]] = {
    "QuerySet.update": _update,
    "bulk_create": _bulk_create,
    "bulk_update": _bulk_update,
    "raw UPDATE": _raw_update,
    "raw INSERT": _raw_insert,
    "raw DELETE": _raw_delete,
    "raw M2M on the through table": _raw_m2m,
    "raw move between jobs": _raw_move,
}


@pytest.mark.parametrize("kind", sorted(WRITES))
async def test_a_change_no_signal_sees_reaches_every_client(application, world, kind):
    path = f"/ws/job/{world.job.pk}/"
    watching = await connect(application, path, world.tokens["alice"])
    await db(WRITES[kind])(world)
    await converges(receive(watching), watching.state, job_state(world))
    later = await connect(application, path, world.tokens["alice"])
    await converges(receive(later), later.state, job_state(world))
    await watching.disconnect()
    await later.disconnect()


async def test_a_change_no_signal_sees_arrives_while_this_process_keeps_committing(
    application, world
):
    """The relay lets this process's committing threads read the log first (they read
    every row no drain holds): a stream of them does not keep other changes waiting."""
    path = f"/ws/job/{world.job.pk}/"
    watching = await connect(application, path, world.tokens["alice"])
    stop = threading.Event()

    def keep_saving() -> None:
        try:
            task, n = Task.objects.get(pk=world.tasks[0].pk), 0
            while not stop.is_set():
                n += 1
                task.title = f"saved {n}"
                task.save()  # propagated by this thread, right after its commit
        finally:
            connections.close_all()

    def raw_title() -> str | None:
        tasks = watching.state.tree()["tasks"]
        return next((t["title"] for t in tasks if t["id"] == world.tasks[1].pk), None)

    saver = threading.Thread(target=keep_saving)
    saver.start()
    try:
        await until(lambda: _metrics.snapshot()["flushes"] > 0)
        await db(_raw_update)(world)
        deadline = asyncio.get_running_loop().time() + timeout(3)
        while raw_title() != "raw" and asyncio.get_running_loop().time() < deadline:
            await receive(watching)(0.2)
        assert raw_title() == "raw"
        assert saver.is_alive()  # it arrived while the commits went on
    finally:
        stop.set()
        await asyncio.to_thread(saver.join)
    await watching.disconnect()


async def test_a_change_made_by_another_process_reaches_every_client(application, world):
    """A save in ``manage.py shell`` (its own process, its own connection)."""
    path = f"/ws/job/{world.job.pk}/"
    watching = await connect(application, path, world.tokens["alice"])
    code = (
        "from jobs.models import Task; "
        f"task = Task.objects.get(pk={world.tasks[0].pk}); "
        "task.title = 'saved in a shell'; task.save()"
    )
    await db(run_command)("shell", "-c", code)
    await converges(receive(watching), watching.state, job_state(world))
    later = await connect(application, path, world.tokens["alice"])
    await converges(receive(later), later.state, job_state(world))
    titles = [task["title"] for task in later.state.tree()["tasks"]]
    assert "saved in a shell" in titles
    await watching.disconnect()
    await later.disconnect()


async def test_commits_made_while_a_drain_runs_are_propagated_together(application, world):
    """Threads that commit while the log is being drained wait for the next drain and
    share it: one propagation for all of them, not one each in turn."""
    path = f"/ws/job/{world.job.pk}/"
    watching = await connect(application, path, world.tokens["alice"])
    tasks = world.tasks

    def rename(task: Task) -> None:
        try:
            task.title = f"{task.title} renamed"
            task.save()  # its drain waits for the lock the test holds
        finally:
            connections.close_all()

    def waiting() -> bool:
        batch = _batches.get("default")
        return batch is not None and len(batch.touched.get(Task, ())) == len(tasks)

    lock = _drain_lock("default")
    lock.acquire()
    try:
        writers = [threading.Thread(target=rename, args=(task,)) for task in tasks]
        for writer in writers:
            writer.start()
        await until(waiting)
        flushes = _metrics.snapshot()["flushes"]
    finally:
        lock.release()
    for writer in writers:
        await asyncio.to_thread(writer.join)
    assert _metrics.snapshot()["flushes"] == flushes + 1
    await converges(receive(watching), watching.state, job_state(world))
    assert all(t["title"].endswith("renamed") for t in watching.state.tree()["tasks"])
    await watching.disconnect()


async def test_the_log_is_emptied_once_changes_are_relayed(application, world):
    path = f"/ws/job/{world.job.pk}/"
    watching = await connect(application, path, world.tokens["alice"])
    await db(_raw_update)(world)
    await converges(receive(watching), watching.state, job_state(world))

    def log_size() -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM {LOG_TABLE}")
            return int(cursor.fetchone()[0])

    await until(lambda: log_size() == 0)  # deleted right after the propagation
    await watching.disconnect()


def _age_the_log(seconds: int) -> None:
    """Make every logged change look ``seconds`` old (on the database's clock)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"UPDATE {LOG_TABLE} SET captured_at = now() - %s * interval '1 second'",
                [seconds],
            )
        else:
            cursor.execute(
                f"UPDATE {LOG_TABLE} SET captured_at = "
                "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', %s)",
                [f"-{seconds} seconds"],
            )


async def test_a_log_nobody_relayed_past_its_retention_is_dropped_with_the_cache(
    application, world
):
    """Changes wait unrelayed longer than ``RX_CAPTURE_RETENTION`` (here the relay is
    stopped, as when every server is down): applying the retention deletes those rows
    but not newer ones, closes the clients with 4408, and the next client is served
    the tables, not the cache that missed the changes."""
    path = f"/ws/job/{world.job.pk}/"
    watching = await connect(application, path, world.tokens["alice"])
    await db(stop_relays)()
    await db(_raw_update)(world)  # logged, relayed by nobody
    await db(_age_the_log)(7200)
    await db(_bulk_create)(world)  # logged just now: within the retention
    assert await db(enforce_retention)(connection.alias) == 1
    assert await watching.receive_close() == 4408
    remaining = await db(lambda: list(CapturedChange.objects.values_list("operation", flat=True)))()
    assert remaining and set(remaining) == {"I"}, remaining
    again = await connect(application, path, world.tokens["alice"])
    assert again.state.tree() == await db(job_state(world))()
    await again.disconnect()


# -- crashes, on Redis with server processes -----------------------------------------------


def _rename(world: World, title: str) -> None:
    task = Task.objects.get(pk=world.tasks[0].pk)
    task.title = title
    task.save()


@pytest.mark.own_backend
@pytest.mark.parametrize("backend", ["embedded", "redis"])
async def test_a_server_killed_between_commit_and_publish_loses_nothing(
    world, shared_redis, tmp_path, backend
):
    """The only server dies after a change committed, before it propagated it: the
    change waits in the log; the restarted server relays it (Redis: into the cache that
    outlived the process; embedded: the new process's cache reads the tables), and a
    client that reconnects with its ``lastUpdate`` converges."""
    crash = tmp_path / "crash"
    hook = {"RX_TEST_CRASH_BEFORE_RELAYING_WHILE": str(crash)}
    if backend == "redis":
        env = shared_redis.server_env(**hook)
        settings = shared_redis.settings()
    else:
        env = {**hook, "RX_TEST_BACKEND": "embedded"}
        settings = contextlib.nullcontext()
    path = f"/ws/job/{world.job.pk}/"
    with settings:
        with running_server(env) as server:
            client = SocketClient(f"{server.url}{path}", world.tokens["alice"])
            await client.open()
            crash.touch()
            await db(_rename)(world, "committed, then the server died")
            assert await asyncio.to_thread(server.process.wait, timeout(2)) == 137
            await client.close()
        crash.unlink()
        with running_server(env) as restarted:
            await client.open(f"{restarted.url}{path}")
            await converges(client.read, client.state, job_state(world))
            titles = [task["title"] for task in client.state.tree()["tasks"]]
            assert "committed, then the server died" in titles
            await client.close()


@pytest.mark.own_backend
async def test_changes_made_while_every_server_was_down_are_served_after_a_restart(
    world, shared_redis
):
    """The anchor stays cached in Redis while no server runs; changes made meanwhile (a
    raw update and a save, by this process) wait in the log. After a restart, a client
    reconnecting with ``lastUpdate`` and a new client both converge."""
    env = shared_redis.server_env()
    path = f"/ws/job/{world.job.pk}/"
    with shared_redis.settings():
        with running_server(env) as server:
            client = SocketClient(f"{server.url}{path}", world.tokens["alice"])
            await client.open()
            await client.close()
        await db(_raw_update)(world)
        await db(_rename)(world, "saved while no server ran")
        with running_server(env) as restarted:
            await client.open(f"{restarted.url}{path}")
            await converges(client.read, client.state, job_state(world))
            late = SocketClient(f"{restarted.url}{path}", world.tokens["alice"])
            await late.open()
            await converges(late.read, late.state, job_state(world))
            await client.close()
            await late.close()


@pytest.mark.own_backend
async def test_when_the_relaying_process_dies_another_takes_over(world, shared_redis):
    """Two servers; the one relaying is killed; a change made afterwards by another
    process reaches the other server's client without it reconnecting."""
    env = shared_redis.server_env()
    path = f"/ws/job/{world.job.pk}/"
    with shared_redis.settings(), running_server(env) as first, running_server(env) as second:
        early = SocketClient(f"{first.url}{path}", world.tokens["alice"])
        await early.open()  # the first server starts relaying (and takes the lease)
        await db(_rename)(world, "relayed by the first")
        await converges(early.read, early.state, job_state(world))
        late = SocketClient(f"{second.url}{path}", world.tokens["alice"])
        await late.open()
        first.process.kill()
        await asyncio.to_thread(first.process.wait, timeout(2))
        await db(_rename)(world, "relayed by the second")
        await converges(late.read, late.state, job_state(world))
        titles = [task["title"] for task in late.state.tree()["tasks"]]
        assert "relayed by the second" in titles
        await late.close()


@pytest.mark.own_backend
async def test_a_process_killed_holding_an_anchor_lock_stalls_the_anchor_for_seconds_only(
    world, shared_redis, tmp_path
):
    """The relaying server dies in the middle of a propagation, holding the anchor's
    lock in Redis: the lock's lease runs out within seconds (not at the lock's longest
    wait), and the other server propagates that change and the next."""
    blocker = tmp_path / "block"
    env = shared_redis.server_env()
    doomed_env = {**env, "RX_TEST_BLOCK_RELAYED_TASK_READS_WHILE": str(blocker)}
    path = f"/ws/job/{world.job.pk}/"
    lock, _ = Keys(shared_redis.prefix).lock((JobChannel.channel_id, world.job.pk))
    redis = shared_redis.client()
    with (
        shared_redis.settings(),
        running_server(doomed_env) as doomed,
        running_server(env) as survivor,
    ):
        early = SocketClient(f"{doomed.url}{path}", world.tokens["alice"])
        await early.open()  # the doomed server relays (it took the lease first)
        late = SocketClient(f"{survivor.url}{path}", world.tokens["alice"])
        await late.open()
        blocker.touch()
        await db(_rename)(world, "propagation interrupted")
        await until(lambda: bool(redis.exists(lock)))  # the relay reads, holding the lock
        doomed.process.kill()
        await asyncio.to_thread(doomed.process.wait, timeout(2))
        await until(lambda: not redis.exists(lock), units=2)
        await converges(late.read, late.state, job_state(world))
        await db(_rename)(world, "after the holder died")
        await converges(late.read, late.state, job_state(world))
        titles = [task["title"] for task in late.state.tree()["tasks"]]
        assert "after the holder died" in titles
        await late.close()
    blocker.unlink()


async def test_changes_are_still_captured_after_a_migration_alters_a_tracked_table(
    application, world
):
    """A column added to the task table (SQLite rebuilds the table for a column with a
    default, which drops its triggers): after ``migrate`` (its ``post_migrate``), raw
    writes to the table still reach clients."""
    column = models.IntegerField(default=7)
    column.set_attributes_from_name("added_later")

    def add_column() -> None:
        with connection.schema_editor() as editor:
            editor.add_field(Task, column)
        emit_post_migrate_signal(verbosity=0, interactive=False, db=connection.alias)

    def remove_column() -> None:
        with connection.schema_editor() as editor:
            editor.remove_field(Task, column)
        emit_post_migrate_signal(verbosity=0, interactive=False, db=connection.alias)

    await db(add_column)()
    try:
        path = f"/ws/job/{world.job.pk}/"
        watching = await connect(application, path, world.tokens["alice"])
        await db(_raw_update)(world)
        await converges(receive(watching), watching.state, job_state(world))
        await watching.disconnect()
    finally:
        await db(remove_column)()


async def test_a_server_says_which_tables_it_cannot_capture_until_migrate_runs(
    application, world, caplog
):
    """A channel deployed without ``migrate``: the tables it reads have no trigger. The
    relay names them when it starts (as runserver names unapplied migrations); after
    ``migrate`` raw writes reach clients again and nothing is reported."""
    task_table = Task._meta.db_table
    await db(stop_relays)()
    await db(lambda: install_triggers(connection, []))()  # as before the channel existed
    try:
        caplog.set_level("WARNING", logger="rxdjango")
        path = f"/ws/job/{world.job.pk}/"
        first = await connect(application, path, world.tokens["alice"])  # starts the relay
        await until(lambda: "not captured" in caplog.text)
        assert task_table in caplog.text and "manage.py migrate" in caplog.text
        await first.disconnect()
    finally:
        await db(stop_relays)()
        await db(emit_post_migrate_signal)(verbosity=0, interactive=False, db=connection.alias)
    caplog.clear()
    watching = await connect(application, path, world.tokens["alice"])
    await db(_raw_update)(world)
    await converges(receive(watching), watching.state, job_state(world))
    assert "not captured" not in caplog.text
    await watching.disconnect()


def _capture_objects() -> set[str]:
    """The capture triggers (and on PostgreSQL their functions) in the database."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT 'trigger ' || event_object_table FROM information_schema.triggers "
                "WHERE trigger_name = 'rxdjango_capture' UNION "
                "SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'rxdjango_capture%%'"
            )
        else:
            cursor.execute(
                "SELECT 'trigger ' || name FROM sqlite_master "
                "WHERE type = 'trigger' AND name LIKE 'rxdjango_capture%%'"
            )
        return {row[0] for row in cursor.fetchall()}


async def test_unwatched_tables_keep_no_trigger_or_function(application, world):
    """Installing for fewer tables removes what the others had, so a channel removed
    from a project leaves nothing running in its database; ``migrate`` puts all back."""
    installed = await db(_capture_objects)()
    assert any(Task._meta.db_table in name for name in installed)
    await db(stop_relays)()
    try:
        await db(lambda: install_triggers(connection, []))()
        assert await db(_capture_objects)() == set()
    finally:
        await db(emit_post_migrate_signal)(verbosity=0, interactive=False, db=connection.alias)
    assert await db(_capture_objects)() == installed


def test_trigger_function_names_fit_postgresql_identifiers():
    """Long table names that share a prefix still get distinct functions of at most 63
    bytes (PostgreSQL would cut longer names and make them collide)."""
    first, second = "a" * 60 + "_one", "a" * 60 + "_two"
    names = {_pg_function_name(first), _pg_function_name(second)}
    assert len(names) == 2 and all(len(name.encode()) <= 63 for name in names)
    assert _pg_function_name("jobs_task") == "rxdjango_capture_jobs_task"
