"""The per-connection API of a ContextChannel: hooks, send, group_add, kwargs."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from django.urls import path
from jobs.serializers import JobSerializer

from rxdjango import _layers
from rxdjango.channels import ContextChannel
from rxdjango.testing import ChannelCommunicator

pytestmark = pytest.mark.django_db(transaction=True)

events: list[tuple] = []


class HookedJobChannel(ContextChannel):
    class Meta:
        state = JobSerializer()

    @staticmethod
    async def has_permission(user, job_id, flavour):
        return True

    async def on_connect(self, tstamp):
        events.append(("connect", tstamp, self.user.username, self.user_id, self.kwargs))
        await self.group_add(f"job-watchers-{self.kwargs['job_id']}")
        await self.send({"type": "hello", "flavour": self.kwargs["flavour"]})

    def on_disconnect(self):
        events.append(("disconnect", self.user.username))


class GrudgingChannel(ContextChannel):
    """has_permission returns a truthy value that is not True: access is denied."""

    class Meta:
        state = JobSerializer()

    @staticmethod
    def has_permission(user, job_id):
        return NotImplemented


application = URLRouter(
    [
        path("hooks/<int:job_id>/<str:flavour>/", HookedJobChannel.as_asgi()),
        path("grudging/<int:job_id>/", GrudgingChannel.as_asgi()),
    ]
)


async def test_hooks_send_group_add_and_kwargs(world):
    events.clear()
    client = ChannelCommunicator(
        application,
        f"/hooks/{world.job.pk}/vanilla/",
        token=world.tokens["bob"],
        last_update=1234.5,
        channel=HookedJobChannel,
    )
    assert (await client.authenticate())["statusCode"] == 200
    # on_connect runs before initialAnchors, and what it sends arrives in order.
    assert await client.receive_frame() == {"type": "hello", "flavour": "vanilla"}
    await client.initial_state()
    assert events == [
        ("connect", 1234.5, "bob", world.bob.pk, {"job_id": world.job.pk, "flavour": "vanilla"})
    ]
    layer = _layers.get_layer("default")
    group = f"job-watchers-{world.job.pk}"
    assert len(layer.groups.get(group, {})) == 1
    await client.disconnect()
    assert events[-1] == ("disconnect", "bob")
    assert not layer.groups.get(group)


async def test_truthy_but_not_true_permission_is_denied(world):
    client = ChannelCommunicator(
        application, f"/grudging/{world.job.pk}/", token=world.tokens["alice"]
    )
    reply = await client.authenticate()
    assert reply["statusCode"] == 403
    assert await client.receive_close() == 4403
