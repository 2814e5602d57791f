"""A load racing writes: a client gets one moment of the database plus every later change.

Each test pauses a load between two layers of the state tree (``between_load_layers``)
and commits a change from another thread there: an update, a create, a delete, a
move between anchors, an M2M change, a private record, a change deeper in the tree.
The loading client and a client that connects afterwards (served from the cache)
must both converge to the serializer's output read fresh, with no id in any list
that lacks its record. The same holds for a reload after ``clear_cache``, a
reconnect that resyncs, and an anchor added to a list channel.

On the Redis backend the same runs across two server processes: the load is paused
in one of them (a hook driven by files) while the test process commits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.db import connections
from django.urls import path

from rxdjango._backends import get_backend
from rxdjango.actions import action
from rxdjango.channels import ContextChannel
from rxdjango.testing import (
    between_load_layers,
    reset_state,
    timeout,
    while_sending_state,
)

from jobs.channels import JobChannel
from jobs.models import Job, Label, Note, Participant, Task
from jobs.serializers import JobBriefSerializer
from support import (
    JOB,
    TASK,
    SocketClient,
    World,
    connect,
    converges,
    expected_state,
    job_state,
    receive,
    running_server,
    until,
)

pytestmark = pytest.mark.django_db(transaction=True)


# -- the changes committed in the middle of a load --------------------------------------


def _rename(world: World) -> None:
    task = Task.objects.get(pk=world.tasks[1].pk)
    task.title = "renamed mid-load"
    task.save()


def _create(world: World) -> None:
    Task.objects.create(job=world.job, title="created mid-load")


def _delete(world: World) -> None:
    Task.objects.get(pk=world.tasks[2].pk).delete()


def _move_out(world: World) -> None:
    task = Task.objects.get(pk=world.tasks[1].pk)
    task.job = world.other_job
    task.save()


def _move_in(world: World) -> None:
    task = Task.objects.get(job=world.other_job, title="elsewhere")
    task.job = world.job
    task.save()


def _label_add(world: World) -> None:
    Task.objects.get(pk=world.tasks[1].pk).labels.add(world.labels[1])


def _label_remove(world: World) -> None:
    Task.objects.get(pk=world.tasks[0].pk).labels.remove(world.labels[0])


def _developer(world: World) -> None:
    task = Task.objects.get(pk=world.tasks[0].pk)
    task.developer = Participant.objects.get(project=world.project, user=world.bob)
    task.save()


def _note(world: World) -> None:
    Note.objects.create(job=world.job, owner=world.alice, text="noted mid-load")


def _unnote(world: World) -> None:
    Note.objects.filter(job=world.job, owner=world.alice).delete()


def _relabel(world: World) -> None:
    label = Label.objects.get(pk=world.labels[0].pk)
    label.name = "renamed label"
    label.save()


def _several(world: World) -> None:
    """What the issue saw: two tasks updated, one created, one deleted at once."""
    _rename(world)
    _create(world)
    _delete(world)
    task = Task.objects.get(pk=world.tasks[0].pk)
    task.done = True
    task.save()


def _everything(world: World) -> None:
    """One change of every kind, each committed on its own."""
    for change in (_rename, _create, _delete, _move_out, _move_in, _label_add, _label_remove):
        change(world)
    for change in (_developer, _note, _unnote, _relabel):
        change(world)


CHANGES: dict[str, Callable[[World], None]] = {
    "update": _rename,
    "create": _create,
    "delete": _delete,
    "move out": _move_out,
    "move in": _move_in,
    "m2m add": _label_add,
    "m2m remove": _label_remove,
    "foreign key": _developer,
    "private create": _note,
    "private delete": _unnote,
    "deeper update": _relabel,
    "several": _several,
}


def prepare(world: World) -> None:
    Task.objects.create(job=world.other_job, title="elsewhere")


def commit_elsewhere(change: Callable[[], None]) -> None:
    """Run ``change`` in a thread of its own (its own connection, its own commits) and
    wait until it is done: called from inside a paused load."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            change()
        except BaseException as error:
            failures.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout())
    assert not thread.is_alive(), "the change could not commit while a load was reading"
    if failures:
        raise failures[0]


class PauseOnce:
    """A ``between_load_layers`` callback: once ``layer`` has been read, commit ``change``."""

    def __init__(self, layer: str, change: Callable[[], None]) -> None:
        self.layer = layer
        self.change = change
        self.fired = False

    def __call__(self, layer: str) -> None:
        if layer == self.layer and not self.fired:
            self.fired = True
            commit_elsewhere(self.change)


# -- convergence ---------------------------------------------------------------------------


LAYERS = {"after the job": JOB, "after the tasks": TASK}


@pytest.mark.parametrize("boundary", sorted(LAYERS))
@pytest.mark.parametrize("kind", sorted(CHANGES))
async def test_a_change_committed_between_layers_reaches_every_client(
    application, world, kind, boundary
):
    await db(prepare)(world)
    path_ = f"/ws/job/{world.job.pk}/"
    pause = PauseOnce(LAYERS[boundary], lambda: CHANGES[kind](world))
    with between_load_layers(pause):
        loading = await connect(application, path_, world.tokens["alice"])
    assert pause.fired, "the load never read that layer"
    await converges(receive(loading), loading.state, job_state(world))
    later = await connect(application, path_, world.tokens["alice"])
    await converges(receive(later), later.state, job_state(world))
    await loading.disconnect()
    await later.disconnect()


@pytest.mark.parametrize("layer", [layer.instance_type for layer in JobChannel.state_model().order])
async def test_every_kind_of_change_at_every_layer_boundary(application, world, layer):
    await db(prepare)(world)
    path_ = f"/ws/job/{world.job.pk}/"
    pause = PauseOnce(layer, lambda: _everything(world))
    with between_load_layers(pause):
        loading = await connect(application, path_, world.tokens["alice"])
    assert pause.fired, "the load never read that layer"
    await converges(receive(loading), loading.state, job_state(world))
    later = await connect(application, path_, world.tokens["alice"])
    await converges(receive(later), later.state, job_state(world))
    await loading.disconnect()
    await later.disconnect()


@pytest.mark.parametrize("kind", ["delete", "create", "move out", "m2m remove", "several"])
async def test_a_reload_after_clear_cache_keeps_changes_made_meanwhile(application, world, kind):
    await db(prepare)(world)
    path_ = f"/ws/job/{world.job.pk}/"
    watching = await connect(application, path_, world.tokens["alice"])
    pause = PauseOnce(JOB, lambda: CHANGES[kind](world))
    with between_load_layers(pause):
        assert await db(JobChannel.clear_cache)(world.job.pk)
    assert pause.fired, "clear_cache did not reload the watched anchor"
    await converges(receive(watching), watching.state, job_state(world))
    later = await connect(application, path_, world.tokens["alice"])
    await converges(receive(later), later.state, job_state(world))
    await watching.disconnect()
    await later.disconnect()


@pytest.mark.parametrize("kind", ["delete", "move in", "m2m add"])
async def test_a_resync_that_reloads_keeps_changes_made_meanwhile(application, world, kind):
    await db(prepare)(world)
    path_ = f"/ws/job/{world.job.pk}/"
    first = await connect(application, path_, world.tokens["alice"])
    await first.disconnect()
    ref = (JobChannel.channel_id, world.job.pk)
    await until(lambda: get_backend().is_idle(ref))
    await db(JobChannel.clear_cache)(world.job.pk)  # unwatched: dropped, the next load is cold
    pause = PauseOnce(JOB, lambda: CHANGES[kind](world))
    with between_load_layers(pause):
        again = await connect(
            application,
            path_,
            world.tokens["alice"],
            last_update=first.state.last_update,
            state=first.state,
        )
    assert pause.fired
    assert {"type": "resync", "anchorId": world.job.pk} in again.state.controls
    await converges(receive(again), again.state, job_state(world))
    await again.disconnect()


def _touch_first_task(world: World, title: str) -> None:
    task = Task.objects.get(pk=world.tasks[0].pk)
    task.title = title
    task.save()


@pytest.mark.parametrize("during", ["initial state", "catch-up"])
@pytest.mark.parametrize("kind", ["delete", "create", "move out", "move in", "m2m remove"])
async def test_a_client_that_reconnects_right_after_its_end_marker_misses_nothing(
    application, world, kind, during
):
    """Changes commit while a client's state or catch-up is being sent (after the job's
    record, or before the catch-up's records are read), the last one to a record sent
    after them. The client reads up to its end marker and reconnects with its
    ``lastUpdate`` before reading the changes that follow the marker: the catch-up
    must still bring them."""
    await db(prepare)(world)
    path_ = f"/ws/job/{world.job.pk}/"
    fire_at = 2 if during == "initial state" else 1
    calls: list[int] = []

    def hook() -> None:
        calls.append(1)
        if len(calls) == fire_at:
            commit_elsewhere(lambda: CHANGES[kind](world))
            commit_elsewhere(lambda: _touch_first_task(world, "written while sent"))

    resume: dict[str, Any] = {}
    if during == "catch-up":
        earlier = await connect(application, path_, world.tokens["alice"])
        await earlier.disconnect()
        await db(_touch_first_task)(world, "written while away")  # in the catch-up
        resume = {"last_update": earlier.state.last_update, "state": earlier.state}
    with while_sending_state(hook):
        sent = await connect(application, path_, world.tokens["alice"], **resume)
    assert len(calls) >= fire_at, "the state was never sent"
    if during == "catch-up":
        assert {"type": "resync", "anchorId": world.job.pk} not in sent.state.controls
    await sent.disconnect()  # what followed the end marker is lost with the socket
    again = await connect(
        application,
        path_,
        world.tokens["alice"],
        last_update=sent.state.last_update,
        state=sent.state,
    )
    await converges(receive(again), again.state, job_state(world))
    await again.disconnect()


class AddingJobsChannel(ContextChannel):
    """A list channel whose client adds anchors through an action."""

    class Meta:
        state = JobBriefSerializer(many=True)

    def list_instances(self, project_id):
        return Job.objects.none()

    @action
    async def add(self, job_id: int) -> bool:
        return await self.add_instance(job_id)


BRIEF = "jobs.serializers.JobBriefSerializer"
adding = URLRouter([path("adding/<int:project_id>/", AddingJobsChannel.as_asgi())])


@pytest.mark.parametrize("kind", ["delete", "create", "move out", "several"])
async def test_an_anchor_added_to_a_list_while_changes_commit(world, kind):
    await db(prepare)(world)
    client = await connect(
        adding, f"/adding/{world.project.pk}/", world.tokens["alice"], channel=AddingJobsChannel
    )
    pause = PauseOnce(BRIEF, lambda: CHANGES[kind](world))
    with between_load_layers(pause):
        await client.send_frame({"callId": 1, "action": "add", "params": [world.job.pk]})
        await client.next_end_marker()
    assert pause.fired

    def want() -> Any:
        return [expected_state(JobBriefSerializer, Job.objects.get(pk=world.job.pk))]

    await converges(receive(client), client.state, want)
    await client.disconnect()


# -- two server processes on Redis ----------------------------------------------------------


@pytest.mark.own_backend
@pytest.mark.parametrize("kind", ["delete", "create", "move out", "move in", "m2m remove"])
async def test_a_change_committed_between_layers_on_redis_with_two_processes(
    world, shared_redis, tmp_path, kind
):
    """The load is paused in one server process while this process commits; clients of
    both processes converge."""
    await db(prepare)(world)
    env = shared_redis.server_env(RX_TEST_PAUSE_LOADS_IN=str(tmp_path))
    pause_file, paused_file = Path(tmp_path, "pause-after"), Path(tmp_path, "paused")
    path_ = f"/ws/job/{world.job.pk}/"
    with shared_redis.settings(), running_server(env) as one, running_server(env) as two:
        reset_state()  # this process commits through the same Redis
        pause_file.write_text(JOB)
        loading = SocketClient(f"{one.url}{path_}", world.tokens["alice"])
        opening = asyncio.ensure_future(loading.open())
        deadline = time.monotonic() + timeout(3)
        while not paused_file.exists():
            assert time.monotonic() < deadline and not opening.done(), "the load never paused"
            await asyncio.sleep(0.01)
        await db(CHANGES[kind])(world)
        pause_file.unlink()
        await asyncio.wait_for(opening, timeout(2))
        later = SocketClient(f"{two.url}{path_}", world.tokens["alice"])
        await later.open()
        for client in (loading, later):
            await converges(client.read, client.state, job_state(world))
            await client.close()
        reset_state()
