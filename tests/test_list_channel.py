"""List channels (state many=True): anchors from list_instances, deltas per anchor."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.urls import path

from rxdjango.channels import ContextChannel

from jobs.channels import ProjectJobsChannel
from jobs.models import Job, Task
from jobs.serializers import JobBriefSerializer
from support import connect, expected_state

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
