"""Meta.optimize_anchors: writes to data nobody watches cost (almost) nothing."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.db import connection
from django.urls import path

from rxdjango import _metrics
from rxdjango._backends import get_backend
from rxdjango._capture import LOG_TABLE
from rxdjango.channels import ContextChannel

from jobs.channels import JobChannel
from jobs.models import Task
from jobs.serializers import JobSerializer
from support import connect, until

pytestmark = pytest.mark.django_db(transaction=True)


class OptimizedJobChannel(ContextChannel):
    class Meta:
        state = JobSerializer()
        optimize_anchors = True


application = URLRouter(
    [
        path("optimized/<int:job_id>/", OptimizedJobChannel.as_asgi()),
        path("plain/<int:job_id>/", JobChannel.as_asgi()),
    ]
)


class Work:
    """What propagation does from the last ``start()`` on: queries and serializations."""

    def __init__(self) -> None:
        self.before = _metrics.snapshot()

    async def start(self) -> None:
        """Once the change log holds nothing older (a process with the Redis backend
        relays what was logged before it started: here, the test's own data)."""
        await until(_log_is_empty)
        self.before = _metrics.snapshot()

    def __call__(self) -> dict[str, int]:
        now = _metrics.snapshot()
        return {name: now[name] - self.before[name] for name in ("queries", "serialized")}


def _log_is_empty() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {LOG_TABLE}")
        return int(cursor.fetchone()[0]) == 0


@pytest.fixture
def work() -> Work:
    return Work()


def rename(task_pk: int, title: str) -> None:
    task = Task.objects.get(pk=task_pk)
    task.title = title
    task.save()


async def test_unwatched_anchor_costs_nothing(world, work):
    client = await connect(
        application, f"/optimized/{world.job.pk}/", world.tokens["alice"], OptimizedJobChannel
    )
    await client.disconnect()
    ref = (OptimizedJobChannel.channel_id, world.job.pk)
    await until(lambda: not get_backend().is_cached(ref))  # dropped once nobody watches
    await work.start()

    await db(rename)(world.tasks[0].pk, "nobody is watching")
    assert work() == {"queries": 0, "serialized": 0}

    # Another anchor of the channel is watched: a write elsewhere costs one light
    # query (the row's foreign keys) and no serialization.
    watcher = await connect(
        application, f"/optimized/{world.other_job.pk}/", world.tokens["alice"], OptimizedJobChannel
    )
    await db(rename)(world.tasks[1].pk, "still nobody")
    assert work() == {"queries": 1, "serialized": 0}
    assert await watcher.nothing_more()
    await watcher.disconnect()


async def test_without_the_option_an_idle_anchor_stays_cached_and_updated(world, work):
    client = await connect(application, f"/plain/{world.job.pk}/", world.tokens["alice"])
    await client.disconnect()
    ref = (JobChannel.channel_id, world.job.pk)
    await until(lambda: get_backend().is_idle(ref))
    await work.start()
    await db(rename)(world.tasks[0].pk, "kept warm")
    assert work()["serialized"] == 1
    # A reconnecting client gets the cached, up-to-date state without a load.
    again = await connect(application, f"/plain/{world.job.pk}/", world.tokens["alice"])
    titles = [t["title"] for t in again.state.tree()["tasks"]]
    assert "kept warm" in titles and get_backend().loads == 1
    await again.disconnect()
