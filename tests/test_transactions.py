"""Broadcasts wait for the commit, carry the final state, and survive rollbacks."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async as db
from django.db import connections, transaction

from rxdjango.channels import ContextChannel
from rxdjango.testing import timeout

from jobs.models import Task
from jobs.serializers import JobSerializer
from support import connect, expected_state, type_name

pytestmark = pytest.mark.django_db(transaction=True)


def rename(task_pk: int, title: str) -> None:
    task = Task.objects.get(pk=task_pk)
    task.title = title
    task.save()


async def test_several_saves_in_one_transaction_become_one_record(application, world):
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    pk = world.tasks[0].pk

    def many_saves():
        with transaction.atomic():
            for step in range(5):
                rename(pk, f"step {step}")

    await db(many_saves)()
    frame = await client.receive_records()
    assert [(r["id"], r["title"]) for r in frame] == [(pk, "step 4")]
    assert await client.nothing_more()
    await client.disconnect()


async def test_nothing_is_sent_before_commit(application, world):
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    saved, release = threading.Event(), threading.Event()

    def slow_transaction():
        try:
            with transaction.atomic():
                rename(world.tasks[1].pk, "committed later")
                saved.set()
                assert release.wait(timeout(2))
        finally:
            connections.close_all()

    writer = sync_to_async(slow_transaction, thread_sensitive=False)()
    import asyncio

    writer_task = asyncio.ensure_future(writer)
    assert await sync_to_async(saved.wait, thread_sensitive=False)(timeout())
    assert await client.nothing_more()
    release.set()
    await writer_task
    frame = await client.receive_records()
    assert frame[0]["title"] == "committed later"
    await client.disconnect()


async def test_rollback_sends_nothing_and_does_not_lose_later_commits(application, world):
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    pk = world.tasks[0].pk

    def rolled_back_then_committed():
        with pytest.raises(RuntimeError), transaction.atomic():
            rename(pk, "never seen")
            raise RuntimeError("abort")
        with transaction.atomic():
            rename(pk, "seen after a rollback")

    await db(rolled_back_then_committed)()
    frame = await client.receive_records()
    assert [r["title"] for r in frame] == ["seen after a rollback"]
    assert await client.nothing_more()
    await client.disconnect()


async def test_rolled_back_savepoint_is_not_broadcast(application, world):
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    first, second = world.tasks[0].pk, world.tasks[1].pk

    def outer_commits_inner_rolls_back():
        # The first change of the transaction happens inside the savepoint that is
        # rolled back: the buffer must not be lost with it.
        with transaction.atomic():
            with pytest.raises(RuntimeError), transaction.atomic():
                rename(first, "inner, rolled back")
                raise RuntimeError("abort savepoint")
            rename(second, "outer, committed")

    await db(outer_commits_inner_rolls_back)()
    frame = await client.receive_records()
    assert [(r["id"], r["title"]) for r in frame] == [(second, "outer, committed")]

    def created_in_rolled_back_savepoint():
        with transaction.atomic():
            with pytest.raises(RuntimeError), transaction.atomic():
                Task.objects.create(job=world.job, title="ghost")
                raise RuntimeError("abort savepoint")
            rename(first, "after the ghost")

    await db(created_in_rolled_back_savepoint)()
    frame = await client.receive_records()
    assert [(type_name(r), r["_operation"]) for r in frame] == [("TaskSerializer", "update")]
    assert frame[0]["title"] == "after the ghost"
    assert await client.nothing_more()
    expected = await db(expected_state)(JobSerializer, world.job, world.alice)
    assert client.state.tree() == expected
    await client.disconnect()


async def test_broadcast_instance_covers_changes_without_signals(application, world):
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    task = world.tasks[2]

    def queryset_update():
        Task.objects.filter(pk=task.pk).update(title="updated in bulk")
        ContextChannel.broadcast_instance(world.job.pk, task)

    await db(queryset_update)()
    frame = await client.receive_records()
    assert [(r["id"], r["title"]) for r in frame] == [(task.pk, "updated in bulk")]

    def bulk_create():
        created = Task.objects.bulk_create([Task(job=world.job, title="bulk")])
        for new in created:
            ContextChannel.broadcast_instance(world.job.pk, new, operation="create")
        return created[0].pk

    new_pk = await db(bulk_create)()
    frame = await client.receive_records()
    assert ("TaskSerializer", "create", new_pk) in {
        (type_name(r), r["_operation"], r["id"]) for r in frame
    }
    with pytest.raises(ValueError):
        ContextChannel.broadcast_instance(world.job.pk, task, operation="upsert")
    await client.disconnect()
