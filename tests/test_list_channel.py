"""List channels (state many=True): anchors from list_instances, deltas per anchor."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.db import transaction
from django.urls import path

from rxdjango._backends import get_backend
from rxdjango.actions import action
from rxdjango.channels import ContextChannel

from jobs.channels import ProjectJobsChannel
from jobs.models import Job, Task
from jobs.serializers import JobBriefSerializer
from support import connect, expected_state, until

pytestmark = pytest.mark.django_db(transaction=True)


class NewestJobsFirstChannel(ContextChannel):
    """list_instances may return plain ids; their order is the anchors' order."""

    class Meta:
        state = JobBriefSerializer(many=True)

    async def list_instances(self, project_id):
        return [str(pk) for pk in await db(self._ids)(project_id)]

    @staticmethod
    def _ids(project_id):
        return list(
            Job.objects.filter(project_id=project_id).order_by("-id").values_list("pk", flat=True)
        )


application = URLRouter([path("newest/<int:project_id>/", NewestJobsFirstChannel.as_asgi())])


async def test_list_of_ids_keeps_its_order(world):
    client = await connect(
        application,
        f"/newest/{world.project.pk}/",
        world.tokens["alice"],
        channel=NewestJobsFirstChannel,
    )
    assert client.state.anchors == [world.other_job.pk, world.job.pk]
    expected = await db(
        lambda: [expected_state(JobBriefSerializer, j) for j in Job.objects.order_by("-id")]
    )()
    assert client.state.tree() == expected
    await client.disconnect()


async def test_each_anchor_of_a_list_channel_gets_its_deltas(application, world):
    client = await connect(
        application,
        f"/ws/project/{world.project.pk}/jobs/",
        world.tokens["alice"],
        channel=ProjectJobsChannel,
    )
    await db(Task.objects.create)(job=world.other_job, title="for the second job")
    frame = await client.receive_records()
    assert {r["_operation"] for r in frame} == {"create", "update"}
    expected = await db(
        lambda: [expected_state(JobBriefSerializer, j) for j in Job.objects.order_by("id")]
    )()
    assert client.state.tree() == expected
    await client.disconnect()


class ManagedJobsChannel(ContextChannel):
    """A list channel whose client manages its anchors through actions."""

    class Meta:
        state = JobBriefSerializer(many=True)
        auto_update = True

    def list_instances(self, project_id):
        return Job.objects.filter(project_id=project_id, title="Launch")

    def is_visible(self, instance_id):
        return Job.objects.filter(pk=instance_id, title__startswith="visible").exists()

    @action
    async def add(self, job_id: int, first: bool = False) -> bool:
        return await self.add_instance(job_id, at_beginning=first)

    @action
    async def remove(self, job_id: int) -> bool:
        return await self.remove_instance(job_id)

    @action
    async def clear_all(self) -> None:
        await self.clear()


managed = URLRouter([path("managed/<int:project_id>/", ManagedJobsChannel.as_asgi())])


async def _call(client, call_id, name, params):
    await client.send_frame({"callId": call_id, "action": name, "params": params})
    while True:
        frame = await client.receive_frame()
        if isinstance(frame, dict) and frame.get("callId") == call_id:
            return frame


async def _assert_tree(client):
    anchors = list(client.state.anchors)

    def expected():
        jobs = {job.pk: job for job in Job.objects.filter(pk__in=anchors)}
        return [expected_state(JobBriefSerializer, jobs[pk]) for pk in anchors]

    assert client.state.tree() == await db(expected)()


async def test_add_remove_clear_with_prepend_ordering(world):
    client = await connect(
        managed, f"/managed/{world.project.pk}/", world.tokens["alice"], channel=ManagedJobsChannel
    )
    assert client.state.anchors == [world.job.pk]
    third = await db(Job.objects.create)(project=world.project, title="third")

    assert (await _call(client, 1, "add", [world.other_job.pk, True]))["result"] is True
    prepend = next(c for c in client.state.controls if c.get("type") == "prependAnchor")
    assert prepend == {"type": "prependAnchor", "anchorId": world.other_job.pk}
    assert client.state.anchors == [world.other_job.pk, world.job.pk]
    assert (await _call(client, 2, "add", [third.pk]))["result"] is True
    assert client.state.anchors == [world.other_job.pk, world.job.pk, third.pk]
    assert (await _call(client, 3, "add", [third.pk]))["result"] is False  # already there
    assert (await _call(client, 4, "add", [999999]))["result"] is False  # no such row
    await _assert_tree(client)

    # Live changes reach every anchor that was added.
    await db(Task.objects.create)(job=third, title="on the third")
    await client.receive_records()
    await _assert_tree(client)

    assert (await _call(client, 5, "remove", [world.job.pk]))["result"] is True
    assert client.state.anchors == [world.other_job.pk, third.pk]
    assert (await _call(client, 6, "remove", [world.job.pk]))["result"] is False
    await db(Task.objects.create)(job=world.job, title="after removal")
    assert await client.nothing_more()  # unsubscribed from the removed anchor

    backend = get_backend()
    await _call(client, 7, "clear_all", [])
    await _call(client, 8, "clear_all", [])  # twice: the bookkeeping must not drift
    assert client.state.anchors == []
    for job in (world.job, world.other_job, third):
        ref = (ManagedJobsChannel.channel_id, job.pk)
        assert backend.local_watchers(ref) == 0
        await until(lambda ref=ref: not backend.is_cached(ref) or backend.is_idle(ref))
    assert (await _call(client, 9, "add", [third.pk]))["result"] is True
    assert client.state.anchors == [third.pk]
    await _assert_tree(client)
    await client.disconnect()


async def test_auto_update_offers_committed_visible_creations_only(world):
    client = await connect(
        managed, f"/managed/{world.project.pk}/", world.tokens["alice"], channel=ManagedJobsChannel
    )
    visible = await db(Job.objects.create)(project=world.project, title="visible job")
    frame = await client.receive_frame()
    assert frame == {"type": "prependAnchor", "anchorId": visible.pk}
    await client.next_end_marker()
    assert client.state.anchors == [visible.pk, world.job.pk]

    await db(Job.objects.create)(project=world.project, title="hidden job")

    def rolled_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            Job.objects.create(project=world.project, title="visible but rolled back")
            raise RuntimeError("abort")

    await db(rolled_back)()
    assert await client.nothing_more()
    assert client.state.anchors == [visible.pk, world.job.pk]

    # A deleted anchor leaves the list.
    await db(Job.objects.filter(pk=visible.pk).delete)()
    frame = await client.receive_records()
    assert (frame[0]["id"], frame[0]["_operation"]) == (visible.pk, "delete")
    assert client.state.anchors == [world.job.pk]
    assert get_backend().hub.count((ManagedJobsChannel.channel_id, visible.pk)) == 0
    await _assert_tree(client)
    await client.disconnect()


async def test_records_shared_by_two_anchors_survive_leaving_one(application, world):
    client = await connect(
        application,
        f"/ws/project/{world.project.pk}/jobs/",
        world.tokens["alice"],
        channel=ProjectJobsChannel,
    )
    label = world.labels[0]  # on tasks[0] of the first job
    shared_task = await db(Task.objects.create)(job=world.other_job, title="also urgent")
    await client.receive_records()
    await db(shared_task.labels.add)(label)
    await client.receive_records()
    await _assert_tree(client)

    # The label leaves the first job but stays in the second: the client keeps it.
    await db(world.tasks[0].labels.remove)(label)
    await client.receive_records()
    await _assert_tree(client)

    # A task moves between two anchors of the same client.
    def move():
        task = Task.objects.get(pk=world.tasks[0].pk)
        task.job = world.other_job
        task.save()

    await db(move)()
    while True:
        try:
            await _assert_tree(client)
            break
        except AssertionError:
            await client.receive_records()
    await client.disconnect()


async def test_auto_update_and_is_visible_are_declared_together():
    from rxdjango.exceptions import ChannelDeclarationError

    with pytest.raises(ChannelDeclarationError, match="is_visible"):

        class NoVisibility(ContextChannel):
            class Meta:
                state = JobBriefSerializer(many=True)
                auto_update = True

    with pytest.raises(ChannelDeclarationError, match="list channel"):

        class NotAList(ContextChannel):
            class Meta:
                state = JobBriefSerializer()
                auto_update = True

            def is_visible(self, instance_id):
                return True
