"""@consumer events, runtime state, notifications and system messages."""

from __future__ import annotations

import threading
from typing import TypedDict

import pytest
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import path

from rxdjango import _layers
from rxdjango.actions import action
from rxdjango.channels import ContextChannel, broadcast_system_message
from rxdjango.consumers import consumer
from rxdjango.exceptions import ChannelDeclarationError, UnknownRuntimeVar

from jobs.channels import LabelChannel
from jobs.serializers import JobSerializer
from support import connect

pytestmark = pytest.mark.django_db(transaction=True)


class EventJobChannel(ContextChannel):
    class Meta:
        state = JobSerializer()

    class RuntimeState(TypedDict):
        viewers: int
        status: str = "idle"  # type: ignore[misc]
        editing: list[int]
        note: str | None

    async def on_connect(self, tstamp):
        await self.group_add(f"job-{self.kwargs['job_id']}")
        self.set_runtime_var("viewers", 1)

    @consumer("job.announcement")
    async def announce(self, event):
        await self.send({"type": "announcement", "text": event["text"]})

    @consumer("job.announcement")
    async def count_announcement(self, event):
        self.set_runtime_var("status", f"announced {event['text']}")

    @action
    async def set_var(self, name: str, value: str) -> dict:
        self.set_runtime_var(name, value)
        return dict(self.runtime_state)

    @action
    async def set_from_thread(self, note: str) -> None:
        await db(lambda: self.set_runtime_var("note", note))()


class OtherEventChannel(ContextChannel):
    """A second channel handling the same event type: no collision."""

    class Meta:
        state = JobSerializer()

    async def on_connect(self, tstamp):
        await self.group_add(f"job-{self.kwargs['job_id']}")

    @consumer("job.announcement")
    async def announce(self, event):
        await self.send({"type": "other-announcement", "text": event["text"]})


application = URLRouter(
    [
        path("events/<int:job_id>/", EventJobChannel.as_asgi()),
        path("other/<int:job_id>/", OtherEventChannel.as_asgi()),
        path("labels/<int:label_id>/", LabelChannel.as_asgi()),
    ]
)


async def next_control(client, kind):
    while True:
        frame = await client.receive_frame()
        if isinstance(frame, dict) and frame.get("type") == kind:
            return frame


async def test_consumer_events_reach_every_handler_of_every_channel(world):
    first = await connect(
        application, f"/events/{world.job.pk}/", world.tokens["alice"], EventJobChannel
    )
    other = await connect(
        application, f"/other/{world.job.pk}/", world.tokens["bob"], OtherEventChannel
    )
    layer = _layers.get_layer("default")
    await layer.group_send(f"job-{world.job.pk}", {"type": "job.announcement", "text": "lunch"})
    assert await next_control(first, "announcement") == {"type": "announcement", "text": "lunch"}
    assert (await next_control(first, "runtimeVar"))["value"] == "announced lunch"
    assert (await next_control(other, "other-announcement"))["text"] == "lunch"
    await first.disconnect()
    await other.disconnect()
    assert not layer.groups.get(f"job-{world.job.pk}"), "groups are left on disconnect"


async def test_runtime_state_defaults_updates_and_unknown_names(world):
    client = await connect(
        application, f"/events/{world.job.pk}/", world.tokens["alice"], EventJobChannel
    )
    # on_connect's set_runtime_var arrived before initialAnchors.
    assert {"type": "runtimeVar", "var": "viewers", "value": 1} in client.state.controls
    await client.send_frame({"callId": 1, "action": "set_var", "params": ["status", "busy"]})
    assert await client.receive_frame() == {"type": "runtimeVar", "var": "status", "value": "busy"}
    reply = await client.receive_frame()
    assert reply["result"] == {"viewers": 1, "status": "busy", "editing": [], "note": None}
    await client.send_frame({"callId": 2, "action": "set_from_thread", "params": ["from ORM"]})
    assert await client.receive_frame() == {
        "type": "runtimeVar",
        "var": "note",
        "value": "from ORM",
    }
    await client.receive_frame()
    await client.disconnect()


@pytest.mark.rx_errors_expected
async def test_unknown_runtime_var_raises(world):
    client = await connect(
        application, f"/events/{world.job.pk}/", world.tokens["alice"], EventJobChannel
    )
    await client.send_frame({"callId": 3, "action": "set_var", "params": ["nope", "x"]})
    reply = await client.receive_frame()
    assert reply["error"]["code"] == 500
    channel = EventJobChannel(connection=None, user=world.alice, kwargs={})
    with pytest.raises(
        UnknownRuntimeVar, match=r"no variable 'nope' \(declared: editing, note, status, viewers\)"
    ):
        channel.set_runtime_var("nope", 1)
    with pytest.raises(TypeError):
        channel.runtime_state["viewers"] = 5  # read-only view
    await client.disconnect()


def test_runtime_state_must_be_a_typed_dict():
    with pytest.raises(ChannelDeclarationError, match="TypedDict"):

        class Broken(ContextChannel):
            class Meta:
                abstract = True

            class RuntimeState:
                viewers: int


async def test_notifications_reach_the_anchor_or_one_user(world):
    alice_1 = await connect(
        application, f"/events/{world.job.pk}/", world.tokens["alice"], EventJobChannel
    )
    alice_2 = await connect(
        application, f"/events/{world.job.pk}/", world.tokens["alice"], EventJobChannel
    )
    bob = await connect(
        application, f"/events/{world.job.pk}/", world.tokens["bob"], EventJobChannel
    )
    elsewhere = await connect(
        application, f"/events/{world.other_job.pk}/", world.tokens["bob"], EventJobChannel
    )

    # From sync code in another thread, as a view or a task would.
    sender = threading.Thread(
        target=EventJobChannel.broadcast_notification,
        args=(world.job.pk, {"message": "to everyone"}),
    )
    sender.start()
    sender.join()
    for client in (alice_1, alice_2, bob):
        assert await client.receive_frame() == [
            {"message": "to everyone", "_instance_type": "_notification"}
        ]
    # From async code, targeted at one user.
    EventJobChannel.broadcast_notification(
        str(world.job.pk), {"message": "alice only"}, user_id=world.alice.pk
    )
    for client in (alice_1, alice_2):
        assert (await client.receive_frame())[0]["message"] == "alice only"
    assert await bob.nothing_more()
    assert await elsewhere.nothing_more()
    with pytest.raises(TypeError):
        EventJobChannel.broadcast_notification(world.job.pk, ["not", "a", "dict"])
    for client in (alice_1, alice_2, bob, elsewhere):
        await client.disconnect()


async def test_system_and_maintenance_messages_reach_every_channel(world):
    job_client = await connect(
        application, f"/events/{world.job.pk}/", world.tokens["alice"], EventJobChannel
    )
    label_client = await connect(
        application, f"/labels/{world.labels[0].pk}/", world.tokens["bob"], LabelChannel
    )
    await db(broadcast_system_message)("deploy at noon")
    broadcast_system_message({"restart_in": 30}, maintenance=True)
    for client in (job_client, label_client):
        assert await next_control(client, "system") == {
            "type": "system",
            "source": "system",
            "message": "deploy at noon",
        }
        assert await next_control(client, "maintenance") == {
            "type": "maintenance",
            "source": "maintenance",
            "message": {"restart_in": 30},
        }
    await job_client.disconnect()
    await label_client.disconnect()


def test_system_message_command_refuses_to_pretend_with_the_embedded_backend(
    world_sync, embedded_backend
):
    with pytest.raises(CommandError, match="its own process"):
        call_command("broadcast_system_message", "hello")


async def test_unauthenticated_sockets_get_no_system_messages(world):
    from rxdjango.testing import ChannelCommunicator

    waiting = ChannelCommunicator(application, f"/events/{world.job.pk}/")
    assert await waiting.connect()
    broadcast_system_message("not for you")
    assert await waiting.nothing_more()
    await waiting.disconnect()
