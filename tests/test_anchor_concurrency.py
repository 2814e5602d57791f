"""Changes to different anchors never wait for each other.

One anchor's propagation is held on a hook (:func:`rxdjango.testing.while_propagating`)
while a change to another anchor commits: that change reaches its client meanwhile.
The same with the replay that ends a cold load, which holds its anchor the same way.
Writers are threads of the serving process, each propagating its own commit, as
Django views and actions do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from channels.db import database_sync_to_async as db
from django.db import connections, transaction

from rxdjango._backends import get_backend
from rxdjango._drain import CONCURRENT_DRAINS
from rxdjango.testing import between_load_layers, timeout, while_propagating

from jobs.channels import JobChannel
from jobs.models import Job, Task
from jobs.serializers import JobSerializer
from support import TASK, connect, converges, expected_state, receive, until

pytestmark = [pytest.mark.own_backend]


@pytest.fixture(params=["embedded", "redis"])
def backend(request, in_process) -> Iterator[None]:
    """Each test on the embedded backend and on Redis."""
    if request.param == "embedded":
        yield
    else:
        with request.getfixturevalue("shared_redis").settings():
            yield


class Hold:
    """Blocks the propagations of one anchor until released."""

    def __init__(self, anchor_pk: Any) -> None:
        self.ref = (JobChannel.channel_id, anchor_pk)
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, ref: tuple[str, Any]) -> None:
        if ref == self.ref:
            self.entered.set()
            assert self.released.wait(timeout(4)), "never released"


@contextmanager
def writer(func: Any, *args: Any) -> Iterator[threading.Thread]:
    """``func(*args)`` in a thread of its own (its commit propagates there)."""

    def run() -> None:
        try:
            func(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout(4))


def rename(pk: int, title: str) -> None:
    task = Task.objects.get(pk=pk)
    task.title = title
    task.save()


def title_committed(task_pk: int, title: str):
    """Whether a writer's new title is committed (for ``until``): converging before
    would compare two states without it, and pass without showing anything."""
    return lambda: Task.objects.filter(pk=task_pk, title=title).exists()


def state_of(job_pk: int, user: Any) -> Any:
    """The job's state as ``user`` sees it, read when called."""
    return lambda: expected_state(JobSerializer, Job.objects.get(pk=job_pk), user)


async def test_a_held_propagation_of_one_anchor_does_not_delay_another(world, backend, application):
    other_task = await db(Task.objects.create)(job=world.other_job, title="elsewhere")
    held = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    free = await connect(application, f"/ws/job/{world.other_job.pk}/", world.tokens["alice"])
    hold = Hold(world.job.pk)
    with (
        while_propagating(hold),
        writer(rename, world.tasks[0].pk, "held on the hook"),
    ):
        assert await asyncio.to_thread(hold.entered.wait, timeout(2))
        with writer(rename, other_task.pk, "arrives meanwhile"):
            await until(title_committed(other_task.pk, "arrives meanwhile"), units=2)
            await converges(receive(free), free.state, state_of(world.other_job.pk, world.alice))
        assert not hold.released.is_set()  # the first propagation is still held
        hold.released.set()
    await converges(receive(held), held.state, state_of(world.job.pk, world.alice))
    titles = [task["title"] for task in held.state.tree()["tasks"]]
    assert "held on the hook" in titles
    await held.disconnect()
    await free.disconnect()


def rename_in_one_commit(first_pk: int, second_pk: int, title: str) -> None:
    with transaction.atomic():
        rename(first_pk, title)
        rename(second_pk, title)


@pytest.mark.parametrize("held_job", ["job", "other_job"])
async def test_one_commit_reaching_a_held_anchor_and_a_free_one_reaches_the_free_one_meanwhile(
    world, backend, application, held_job
):
    """One batch, two anchors: the part for the free anchor does not wait behind the
    part for the anchor being changed (held on the hook), whichever comes first."""
    other_task = await db(Task.objects.create)(job=world.other_job, title="elsewhere")
    held_pk, held_task = {
        "job": (world.job.pk, world.tasks[0].pk),
        "other_job": (world.other_job.pk, other_task.pk),
    }[held_job]
    free_pk, free_task = {
        "job": (world.other_job.pk, other_task.pk),
        "other_job": (world.job.pk, world.tasks[0].pk),
    }[held_job]
    held = await connect(application, f"/ws/job/{held_pk}/", world.tokens["alice"])
    free = await connect(application, f"/ws/job/{free_pk}/", world.tokens["alice"])
    hold = Hold(held_pk)
    with (
        while_propagating(hold),
        writer(rename, held_task, "held on the hook"),
    ):
        assert await asyncio.to_thread(hold.entered.wait, timeout(2))
        both = world.tasks[1].pk if held_job == "job" else other_task.pk
        with writer(rename_in_one_commit, both, free_task, "one commit"):
            await until(title_committed(free_task, "one commit"), units=2)
            await converges(receive(free), free.state, state_of(free_pk, world.alice))
            # Still held; the held anchor's part of the commit waits for it.
            assert hold.entered.is_set() and not hold.released.is_set()
            hold.released.set()
    await converges(receive(held), held.state, state_of(held_pk, world.alice))
    titles = [task["title"] for task in held.state.tree()["tasks"]]
    assert "one commit" in titles
    await held.disconnect()
    await free.disconnect()


async def test_the_replay_ending_a_cold_load_does_not_delay_another_anchor(
    world, backend, application
):
    other_task = await db(Task.objects.create)(job=world.other_job, title="elsewhere")
    free = await connect(application, f"/ws/job/{world.other_job.pk}/", world.tokens["alice"])
    hold = Hold(world.job.pk)
    committed = threading.Event()

    def commit_once(instance_type: str) -> None:
        # A change to the loading anchor commits mid-load: the load replays it.
        if not committed.is_set():
            committed.set()
            with writer(rename, world.tasks[1].pk, "committed while loading"):
                pass

    with between_load_layers(commit_once), while_propagating(hold):
        loading = asyncio.create_task(
            connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
        )
        assert await asyncio.to_thread(hold.entered.wait, timeout(2))
        with writer(rename, other_task.pk, "arrives meanwhile"):
            await until(title_committed(other_task.pk, "arrives meanwhile"), units=2)
            await converges(receive(free), free.state, state_of(world.other_job.pk, world.alice))
        assert not loading.done()  # the load is still held in its replay
        hold.released.set()
        late = await loading
    await converges(receive(late), late.state, state_of(world.job.pk, world.alice))
    titles = [task["title"] for task in late.state.tree()["tasks"]]
    assert "committed while loading" in titles
    await late.disconnect()
    await free.disconnect()


def create_task(job_pk: int, title: str) -> None:
    Task.objects.create(job_id=job_pk, title=title)


def move(title: str, job_pk: int) -> None:
    task = Task.objects.get(title=title)
    task.job_id = job_pk
    task.save()


async def test_a_row_read_before_it_moved_is_not_left_in_the_anchor_it_left(
    world, backend, application
):
    """Two propagations of one row lock different anchors: the first read the row in
    ``job`` and is held before writing it there; meanwhile the row moves to
    ``other_job`` and the second propagation, which locks only ``other_job`` (``job``
    does not hold the row yet), finishes. The first then writes what it read: the
    change it missed is replayed, and ``job`` lets the row go."""
    held = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    other = await connect(application, f"/ws/job/{world.other_job.pk}/", world.tokens["alice"])
    hold = Hold(world.job.pk)
    with while_propagating(hold), writer(create_task, world.job.pk, "moves away"):
        assert await asyncio.to_thread(hold.entered.wait, timeout(2))
        with writer(move, "moves away", world.other_job.pk):
            pass  # joined: the move committed, and propagated to the anchor it locks alone
        # (Converging before the move commits would compare two states without the row.)
        await converges(receive(other), other.state, state_of(world.other_job.pk, world.alice))
        assert "moves away" in [task["title"] for task in other.state.tree()["tasks"]]
        hold.released.set()
    # The held propagation is over (its thread joined); a change after it, in the
    # same anchor, tells when its client has seen everything before.
    moved = await db(Task.objects.get)(title="moves away")
    assert await db(get_backend().holders)((TASK, moved.pk)) == {
        (JobChannel.channel_id, world.other_job.pk)
    }
    with writer(rename, world.tasks[0].pk, "after the move"):
        pass
    await converges(receive(held), held.state, state_of(world.job.pk, world.alice))
    titles = [task["title"] for task in held.state.tree()["tasks"]]
    assert "after the move" in titles
    assert "moves away" not in titles
    assert "moves away" in [task["title"] for task in other.state.tree()["tasks"]]
    await held.disconnect()
    await other.disconnect()


async def test_changes_waiting_for_a_held_anchor_do_not_take_every_drain_of_the_process(
    world, backend, application
):
    """More commits to a held anchor than a process runs drains at once, each in a thread
    of its own: while they all wait for the anchor, a change to another anchor still
    reaches its client (a waiting drain gives its place up), and once the anchor is
    free every one of them reaches its client."""
    waiting = CONCURRENT_DRAINS + 2
    tasks = [
        await db(Task.objects.create)(job=world.job, title=f"before {n}") for n in range(waiting)
    ]
    other_task = await db(Task.objects.create)(job=world.other_job, title="elsewhere")
    held = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    free = await connect(application, f"/ws/job/{world.other_job.pk}/", world.tokens["alice"])
    hold = Hold(world.job.pk)
    with ExitStack() as writers:
        writers.enter_context(while_propagating(hold))
        writers.enter_context(writer(rename, world.tasks[0].pk, "held on the hook"))
        assert await asyncio.to_thread(hold.entered.wait, timeout(2))
        for n, task in enumerate(tasks):
            writers.enter_context(writer(rename, task.pk, f"waited {n}"))
        for n, task in enumerate(tasks):
            await until(title_committed(task.pk, f"waited {n}"), units=2)
        with writer(rename, other_task.pk, "arrives meanwhile"):
            await until(title_committed(other_task.pk, "arrives meanwhile"), units=2)
            await converges(receive(free), free.state, state_of(world.other_job.pk, world.alice))
        assert not hold.released.is_set()  # the anchor is still held
        hold.released.set()
    await converges(receive(held), held.state, state_of(world.job.pk, world.alice))
    titles = {task["title"] for task in held.state.tree()["tasks"]}
    assert {"held on the hook", *(f"waited {n}" for n in range(waiting))} <= titles
    await held.disconnect()
    await free.disconnect()
