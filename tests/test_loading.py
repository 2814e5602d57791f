"""The first client loads an anchor once; others wait for it, never forever."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async as db
from django.db import connections

from rxdjango import _loader
from rxdjango._backend import get_backend
from rxdjango.testing import timeout

from jobs.channels import JobChannel
from jobs.models import Task
from jobs.serializers import JobSerializer
from support import connect, expected_state

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


def test_waiters_wait_for_the_loader_then_share_its_result(world_sync, monkeypatch):
    world = world_sync
    started, release = threading.Event(), threading.Event()
    original = _loader.load_subtrees

    def slow_load(*args, **kwargs):
        started.set()
        assert release.wait(timeout())
        return original(*args, **kwargs)

    monkeypatch.setattr(_loader, "load_subtrees", slow_load)
    backend = get_backend()
    results: dict = {}
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
    assert backend.loads == 1
    keys = lambda snap: sorted(r.key for r in snap.records())  # noqa: E731
    assert keys(results["loader"]) == keys(results["waiter"])


def test_clear_cache_during_a_load_discards_what_that_load_read(world_sync, monkeypatch):
    """A client arriving while the cache is cleared gets the state as of after the clear."""
    world = world_sync
    read, release = threading.Event(), threading.Event()
    original = _loader.load_subtrees
    calls = []

    def load_then_wait(*args, **kwargs):
        records = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            read.set()
            assert release.wait(timeout())
        return records

    monkeypatch.setattr(_loader, "load_subtrees", load_then_wait)
    backend = get_backend()
    results: dict = {}
    loader = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "client")
    assert read.wait(timeout())
    # A change without signals (the reason to clear a cache), then the clear.
    Task.objects.filter(pk=world.tasks[0].pk).update(title="changed, then cleared")
    assert not JobChannel.clear_cache(world.job.pk)  # it was not hot yet
    release.set()
    loader.join(timeout())
    titles = {r.data.get("title") for r in results["client"].records()}
    assert "changed, then cleared" in titles, "the load that read stale rows was discarded"
    assert len(calls) == 2


def test_a_failed_loader_does_not_leave_others_waiting(world_sync, monkeypatch):
    world = world_sync
    started, release = threading.Event(), threading.Event()
    original = _loader.load_subtrees
    calls = []

    def failing_first(*args, **kwargs):
        calls.append(threading.get_ident())
        if len(calls) == 1:
            started.set()
            assert release.wait(timeout())
            raise RuntimeError("loader died")
        return original(*args, **kwargs)

    monkeypatch.setattr(_loader, "load_subtrees", failing_first)
    backend = get_backend()
    results: dict = {}
    loader = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "loader")
    assert started.wait(timeout())
    waiter = _in_thread(lambda: backend.snapshot(JobChannel, world.job.pk), results, "waiter")
    release.set()
    loader.join(timeout())
    waiter.join(timeout())
    assert isinstance(results["loader"], RuntimeError)
    assert results["waiter"] is not None and len(list(results["waiter"].records())) > 10
    assert len(calls) == 2 and backend.loads == 1


async def test_change_committed_during_the_load_is_not_lost(application, world, monkeypatch):
    original = _loader.load_subtrees
    pk = world.tasks[1].pk

    def load_then_change(*args, **kwargs):
        records = original(*args, **kwargs)
        # Committed after the loader read the rows, before the cache is hot.
        task = Task.objects.get(pk=pk)
        task.title = "changed mid-load"
        task.save()
        return records

    monkeypatch.setattr(_loader, "load_subtrees", load_then_change)
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    titles = {t["id"]: t["title"] for t in client.state.tree()["tasks"]}
    while titles[pk] != "changed mid-load":
        await client.receive_records()
        titles = {t["id"]: t["title"] for t in client.state.tree()["tasks"]}
    expected = await db(expected_state)(JobSerializer, world.job, world.alice)
    assert client.state.tree() == expected
    await client.disconnect()


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
    monkeypatch.setattr(JobChannel.Meta, "cache_ttl", 0.000001, raising=False)
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


async def test_clear_cache_resyncs_clients_that_watch_the_anchor(application, world):
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


@pytest.mark.rx_errors_expected
async def test_a_failed_propagation_makes_clients_reload_instead_of_going_stale(
    application, world, monkeypatch
):
    from rxdjango import _propagation

    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    original = _propagation.fetch_layer

    def failing(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(_propagation, "fetch_layer", failing)

    def rename():
        task = Task.objects.get(pk=world.tasks[0].pk)
        task.title = "changed while propagation fails"
        task.save()  # the commit succeeds; propagating it does not

    await db(rename)()
    assert await client.receive_close() == 4408
    monkeypatch.setattr(_propagation, "fetch_layer", original)
    again = await connect(
        application,
        f"/ws/job/{world.job.pk}/",
        world.tokens["alice"],
        last_update=client.state.last_update,
    )
    assert {"type": "resync", "anchorId": world.job.pk} in again.state.controls
    expected = await db(expected_state)(JobSerializer, world.job, world.alice)
    assert again.state.tree() == expected
    await again.disconnect()
