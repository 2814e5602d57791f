"""Reconnecting with lastUpdate: only what changed (deletes included), or resync."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as db
from django.test.utils import override_settings

from rxdjango.testing import ChannelCommunicator, reset_state

from jobs.channels import JobChannel, ProjectJobsChannel
from jobs.models import Job, Note, Task
from jobs.serializers import JobBriefSerializer, JobSerializer
from support import connect, expected_state, type_name

pytestmark = pytest.mark.django_db(transaction=True)


async def reconnect(application, path, token, previous, channel=JobChannel):
    """Reconnect with the previous client's lastUpdate and state; returns (client, records)."""
    client = ChannelCommunicator(
        application,
        path,
        token=token,
        last_update=previous.state.last_update,
        channel=channel,
        state=previous.state,
    )
    assert (await client.authenticate())["statusCode"] == 200
    received_before = len(client.state.received)
    await client.initial_state()
    return client, client.state.received[received_before:]


def changes_while_away(world):
    task = Task.objects.get(pk=world.tasks[1].pk)
    task.title = "renamed while away"
    task.save()
    Task.objects.create(job=world.job, title="created while away")
    Task.objects.get(pk=world.tasks[2].pk).delete()
    Note.objects.get(owner=world.bob, job=world.job).delete()  # private to bob


async def test_reconnect_gets_only_the_changes_including_deletes(application, world):
    path = f"/ws/job/{world.job.pk}/"
    first = await connect(application, path, world.tokens["alice"])
    await first.disconnect()
    await db(changes_while_away)(world)

    client, records = await reconnect(application, path, world.tokens["alice"], first)
    assert not any(c.get("type") == "resync" for c in client.state.controls)
    kinds = {(type_name(r), r["_operation"]) for r in records}
    assert ("TaskSerializer", "delete") in kinds
    assert ("TaskSerializer", "create") in kinds
    assert all(r["_operation"] in ("create", "delete") for r in records)
    unchanged = {world.tasks[0].pk}
    assert not any(r["id"] in unchanged and type_name(r) == "TaskSerializer" for r in records)
    assert len(records) < 8, "a catch-up, not the whole state"
    assert not any(type_name(r) == "NoteSerializer" for r in records), "bob's note is bob's"
    assert client.state.tree() == await db(expected_state)(JobSerializer, world.job, world.alice)
    await client.disconnect()


async def test_private_deletes_reach_their_owner_on_catch_up(application, world):
    path = f"/ws/job/{world.job.pk}/"
    first = await connect(application, path, world.tokens["bob"])
    await first.disconnect()
    await db(changes_while_away)(world)
    client, records = await reconnect(application, path, world.tokens["bob"], first)
    assert ("NoteSerializer", "delete") in {(type_name(r), r["_operation"]) for r in records}
    assert client.state.tree() == await db(expected_state)(JobSerializer, world.job, world.bob)
    await client.disconnect()


@override_settings(RX_HISTORY_SIZE=2)
async def test_trimmed_history_means_resync_and_full_state(application, world):
    path = f"/ws/job/{world.job.pk}/"
    first = await connect(application, path, world.tokens["alice"])
    await first.disconnect()
    await db(changes_while_away)(world)
    client, records = await reconnect(application, path, world.tokens["alice"], first)
    assert {"type": "resync", "anchorId": world.job.pk} in client.state.controls
    assert all(r["_operation"] == "initial_state" for r in records)
    assert client.state.tree() == await db(expected_state)(JobSerializer, world.job, world.alice)
    await client.disconnect()


@pytest.mark.parametrize("forget", ["clear_cache", "restart"])
async def test_a_cache_that_was_reloaded_proves_nothing(application, world, forget):
    path = f"/ws/job/{world.job.pk}/"
    first = await connect(application, path, world.tokens["alice"])
    await first.disconnect()
    if forget == "clear_cache":
        assert await db(JobChannel.clear_cache)(world.job.pk)
    else:
        reset_state()  # what a server restart does to the embedded cache
    await db(changes_while_away)(world)
    client, _ = await reconnect(application, path, world.tokens["alice"], first)
    assert {"type": "resync", "anchorId": world.job.pk} in client.state.controls
    assert client.state.tree() == await db(expected_state)(JobSerializer, world.job, world.alice)
    await client.disconnect()


async def test_list_channels_resync_every_anchor(application, world):
    path = f"/ws/project/{world.project.pk}/jobs/"
    first = await connect(application, path, world.tokens["alice"], channel=ProjectJobsChannel)
    await first.disconnect()
    await db(changes_while_away)(world)
    client, _ = await reconnect(
        application, path, world.tokens["alice"], first, channel=ProjectJobsChannel
    )
    resyncs = [c["anchorId"] for c in client.state.controls if c.get("type") == "resync"]
    assert resyncs == [world.job.pk, world.other_job.pk]

    def expected():
        return [expected_state(JobBriefSerializer, j) for j in Job.objects.order_by("id")]

    assert client.state.tree() == await db(expected)()
    await client.disconnect()
