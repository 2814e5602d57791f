"""The first client loads an anchor once; others wait for it, never forever."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.db import connections
from django.test import override_settings
from django.urls import path
from rest_framework import serializers

from rxdjango._backends import get_backend
from rxdjango._capture import forget_capturing
from rxdjango.channels import ContextChannel
from rxdjango.testing import between_load_layers, timeout

from jobs.channels import JobChannel
from jobs.models import Job, Task
from jobs.serializers import JobSerializer
from support import JOB, connect, expected_state

pytestmark = pytest.mark.django_db(transaction=True)


async def test_concurrent_connects_load_once_and_agree(application, world):
    path = f"/ws/job/{world.job.pk}/"
    clients = await asyncio.gather(
        *(connect(application, path, world.tokens[name]) for name in ("alice", "bob", "alice"))
    )
    assert get_backend().loads == 1
    expected_alice = await db(expected_state)(JobSerializer, world.job, world.alice)
    assert clients[0].state.tree() == expected_alice == clients[2].state.tree()
    assert clients[1].state.tree() == await db(expected_state)(JobSerializer, world.job, world.bob)
    for client in clients:
        await client.disconnect()


def _in_thread(target, results: dict, name: str) -> threading.Thread:
    def run():
        try:
            results[name] = target()
        except Exception as exc:
            results[name] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_waiters_wait_for_the_loader_then_share_its_result(world_sync):
    world = world_sync
    started, release = threading.Event(), threading.Event()
    loads: list[int] = []

    def slow_first_load(layer: str) -> None:
        if layer == JOB:
            loads.append(1)
            started.set()
            if len(loads) == 1:
                assert release.wait(timeout())

    backend = get_backend()
    results: dict = {}
    with between_load_layers(slow_first_load):
        loader = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "loader")
        assert started.wait(timeout())
        started.clear()
        waiter = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "waiter")
        waiter.join(timeout(0.1))
        assert waiter.is_alive(), "the second caller must wait for the first loader"
        assert not started.is_set(), "the second caller must not load again"
        release.set()
        loader.join(timeout())
        waiter.join(timeout())
    assert backend.loads == 1 and len(loads) == 1
    keys = lambda snap: sorted(r.key for r in snap.records())  # noqa: E731
    assert keys(results["loader"]) == keys(results["waiter"])


def test_clear_cache_during_a_load_discards_what_that_load_read(world_sync):
    """A client arriving while the cache is cleared gets the state as of after the clear."""
    world = world_sync
    read, release = threading.Event(), threading.Event()
    loads: list[int] = []

    def wait_in_first_load(layer: str) -> None:
        if layer == JOB:
            loads.append(1)
            if len(loads) == 1:
                read.set()
                assert release.wait(timeout())

    backend = get_backend()
    results: dict = {}
    with between_load_layers(wait_in_first_load):
        loader = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "client")
        assert read.wait(timeout())
        # A change without signals (the reason to clear a cache), then the clear. The
        # paused load reads one moment of the database, from before both.
        Task.objects.filter(pk=world.tasks[0].pk).update(title="changed, then cleared")
        assert not JobChannel.clear_cache(world.job.pk)  # it was not hot yet
        release.set()
        loader.join(timeout())
    titles = {r.data.get("title") for r in results["client"].records()}
    assert "changed, then cleared" in titles, "the load that read stale rows was discarded"
    assert len(loads) == 2


def test_a_failed_loader_does_not_leave_others_waiting(world_sync):
    world = world_sync
    started, release = threading.Event(), threading.Event()
    loads: list[int] = []

    def failing_first(layer: str) -> None:
        if layer == JOB:
            loads.append(threading.get_ident())
            if len(loads) == 1:
                started.set()
                assert release.wait(timeout())
                raise RuntimeError("loader died")

    backend = get_backend()
    results: dict = {}
    with between_load_layers(failing_first):
        loader = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "loader")
        assert started.wait(timeout())
        waiter = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "waiter")
        release.set()
        loader.join(timeout())
        waiter.join(timeout())
    assert isinstance(results["loader"], RuntimeError)
    assert results["waiter"] is not None and len(list(results["waiter"].records())) > 10
    assert len(loads) == 2 and backend.loads == 1


def test_idle_anchor_expires_after_its_ttl_without_a_cron_job(
    world_sync, monkeypatch, embedded_backend
):
    """The embedded backend expires idle anchors when the next client arrives
    (test_redis_backend shows the Redis backend's sweeps)."""
    world = world_sync
    backend = get_backend()
    ref = (JobChannel.channel_id, world.job.pk)
    backend.snapshot(JobChannel, world.job.pk)
    backend.snapshot(JobChannel, world.job.pk)
    assert backend.loads == 1  # cached while fresh

    class Watcher:
        user_id = None
        loop = None

    watcher = Watcher()
    backend.subscribe(ref, watcher)
    monkeypatch.setattr(JobChannel.spec, "cache_ttl", 0.000001)
    backend.snapshot(JobChannel, world.job.pk)
    assert backend.loads == 1, "a watched anchor never expires"
    backend.unsubscribe(ref, watcher)  # the last client left: the TTL starts
    backend.snapshot(JobChannel, world.job.pk)
    assert backend.loads == 2, "an idle anchor past its TTL is loaded again"


def test_clear_cache_drops_a_hot_anchor(world_sync):
    world = world_sync
    backend = get_backend()
    assert not JobChannel.clear_cache(world.job.pk)  # not cached
    backend.snapshot(JobChannel, world.job.pk)
    ref = (JobChannel.channel_id, world.job.pk)
    task_key = ("jobs.serializers.TaskSerializer", world.tasks[0].pk)
    assert ref in backend.holders(task_key)
    assert JobChannel.clear_cache(str(world.job.pk))
    assert ref not in backend.holders(task_key), "no stale index entries"
    assert not JobChannel.clear_cache(world.job.pk)
    backend.snapshot(JobChannel, world.job.pk)
    assert backend.loads == 2


@override_settings(RX_CAPTURE=False)  # on a database that cannot capture changes
async def test_clear_cache_resyncs_clients_that_watch_the_anchor(application, world):
    forget_capturing()
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    await db(Task.objects.filter(pk=world.tasks[0].pk).update)(title="changed behind our back")
    assert await client.nothing_more()  # no signal, so nobody knew
    assert await db(JobChannel.clear_cache)(world.job.pk)
    frame = await client.receive_records()
    assert [(r["id"], r["title"]) for r in frame] == [
        (world.tasks[0].pk, "changed behind our back")
    ]
    expected = await db(expected_state)(JobSerializer, world.job, world.alice)
    assert client.state.tree() == expected
    await client.disconnect()


class FragileTaskSerializer(serializers.ModelSerializer):
    """A project's serializer with a bug that only some rows reach."""

    checked = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = ["id", "title", "checked"]

    def get_checked(self, task: Task) -> bool:
        if task.title == "boom":
            raise RuntimeError("a bug in a serializer")
        return True


class FragileJobSerializer(serializers.ModelSerializer):
    tasks = FragileTaskSerializer(many=True)

    class Meta:
        model = Job
        fields = ["id", "title", "tasks"]


class FragileJobChannel(ContextChannel):
    class Meta:
        state = FragileJobSerializer()

    @staticmethod
    def has_permission(user, job_id):
        return True


fragile = URLRouter([path("fragile/<int:job_id>/", FragileJobChannel.as_asgi())])


@pytest.mark.rx_errors_expected
async def test_a_failed_propagation_makes_clients_reload_instead_of_going_stale(world):
    """A change whose propagation raises (here a serializer bug) cannot be half applied:
    the anchor's clients are closed with 4408 and reload it, with ``resync``."""
    path_ = f"/fragile/{world.job.pk}/"
    client = await connect(fragile, path_, world.tokens["alice"], channel=FragileJobChannel)
    pk = world.tasks[0].pk

    def rename():
        task = Task.objects.get(pk=pk)
        task.title = "boom"
        task.save()  # the commit succeeds; propagating it does not

    await db(rename)()
    assert await client.receive_close() == 4408
    # Fixed without a signal: only a reload can show it.
    await db(lambda: Task.objects.filter(pk=pk).update(title="fixed"))()
    again = await connect(
        fragile,
        path_,
        world.tokens["alice"],
        channel=FragileJobChannel,
        last_update=client.state.last_update,
    )
    assert {"type": "resync", "anchorId": world.job.pk} in again.state.controls
    job = await db(Job.objects.get)(pk=world.job.pk)
    assert again.state.tree() == await db(expected_state)(FragileJobSerializer, job)
    assert "fixed" in [task["title"] for task in again.state.tree()["tasks"]]
    await again.disconnect()
