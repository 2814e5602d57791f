"""The per-connection API of a ContextChannel: hooks, send, group_add, kwargs."""

from __future__ import annotations

import pytest
from channels.routing import URLRouter
from django.urls import path

from rxdjango import _layers
from rxdjango.channels import ContextChannel
from rxdjango.testing import ChannelCommunicator, ConnectionClosed

from jobs.serializers import JobSerializer

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


class BrokenPermissionChannel(ContextChannel):
    class Meta:
        state = JobSerializer()

    @staticmethod
    def has_permission(user, job_id):
        raise KeyError("secret internal detail")


class BrokenConnectChannel(ContextChannel):
    class Meta:
        state = JobSerializer()

    async def on_connect(self, tstamp):
        raise ValueError("secret internal detail")


application = URLRouter(
    [
        path("broken-permission/<int:job_id>/", BrokenPermissionChannel.as_asgi()),
        path("broken-connect/<int:job_id>/", BrokenConnectChannel.as_asgi()),
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


@pytest.mark.rx_errors_expected
@pytest.mark.parametrize("route", ["broken-permission", "broken-connect"])
async def test_a_hook_that_raises_closes_without_internal_detail(world, route, caplog):
    client = ChannelCommunicator(
        application, f"/{route}/{world.job.pk}/", token=world.tokens["alice"]
    )
    assert await client.connect()
    await client.send_frame({"token": world.tokens["alice"]})
    frames = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(await client.receive_frame())
    assert closed.value.code == 1011
    assert frames[-1] == {"type": "error", "error": {"code": 500, "message": "internal error"}}
    assert "secret" not in repr(frames)
    assert not any(isinstance(f, list) for f in frames), "no state after a failed start"
    assert "secret internal detail" in caplog.text  # logged server-side, with traceback


async def test_only_a_connection_in_a_group_listens_on_the_channel_layer(world):
    """Channels' in-memory layer scans every listening channel on each receive, so a
    connection listens only once it joins a group: thousands of connections that join
    none cost the layer nothing (they used to make connecting n clients n² steps)."""
    layer = _layers.get_layer("default")
    path_ = f"/hooks/{world.job.pk}/vanilla/"
    waiting = [ChannelCommunicator(application, path_, token=world.tokens["bob"]) for _ in range(3)]
    for client in waiting:
        assert await client.connect()  # accepted, not authenticated: in no group yet
    assert layer.channels == {}, "no connection outside a group listens on the layer"
    joined = ChannelCommunicator(
        application, path_, token=world.tokens["bob"], channel=HookedJobChannel
    )
    assert (await joined.authenticate())["statusCode"] == 200
    assert await joined.receive_frame() == {"type": "hello", "flavour": "vanilla"}
    await joined.initial_state()  # on_connect joined its group: it listens now
    assert len(layer.channels) == 1
    for client in [*waiting, joined]:
        await client.disconnect()
