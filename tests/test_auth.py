"""The first frame authenticates; every outcome has its status and close code."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as db
from django.test.utils import override_settings

from rxdjango.testing import ChannelCommunicator

from jobs.channels import JobChannel
from jobs.models import Task
from support import make_user

pytestmark = pytest.mark.django_db(transaction=True)


async def refused(application, path: str, first_frame) -> tuple[dict, int]:
    client = ChannelCommunicator(application, path, channel=JobChannel)
    assert await client.connect()
    await client.send_frame(first_frame)
    reply = await client.receive_frame()
    code = await client.receive_close()
    return reply, code


@pytest.mark.parametrize(
    "first_frame",
    [{"lastUpdate": None}, ["token"], "not json {", {"token": 42}],
    ids=["no-token", "not-an-object", "invalid-json", "token-not-a-string"],
)
async def test_bad_auth_frame_is_400(application, world, first_frame):
    reply, code = await refused(application, f"/ws/job/{world.job.pk}/", first_frame)
    assert reply == {"type": "auth", "statusCode": 400, "error": "error/missing-token"}
    assert code == 4400


async def test_unknown_token_is_401(application, world):
    reply, code = await refused(application, f"/ws/job/{world.job.pk}/", {"token": "nope"})
    assert reply == {"type": "auth", "statusCode": 401, "error": "error/unauthorized"}
    assert code == 4401


async def test_inactive_user_is_401(application, world):
    _, token = await db(make_user)("ghost", active=False)
    reply, code = await refused(application, f"/ws/job/{world.job.pk}/", {"token": token})
    assert reply["statusCode"] == 401 and code == 4401


async def test_no_permission_is_403(application, world):
    token = world.tokens["carol"]  # not a participant of the project
    reply, code = await refused(application, f"/ws/job/{world.job.pk}/", {"token": token})
    assert reply == {"type": "auth", "statusCode": 403, "error": "error/forbidden"}
    assert code == 4403


async def test_missing_anchor_is_404_instead_of_200(application, world):
    _, token = await db(make_user)("admin", staff=True)
    reply, code = await refused(application, "/ws/job/999999/", {"token": token})
    assert reply == {"type": "auth", "statusCode": 404, "error": "error/not-found"}
    assert code == 4404


async def test_permission_is_checked_before_existence(application, world):
    reply, code = await refused(application, "/ws/job/999999/", {"token": world.tokens["alice"]})
    assert reply["statusCode"] == 403 and code == 4403


@override_settings(RX_AUTH_TIMEOUT=0.05)
async def test_silent_client_times_out_with_408(application, world):
    client = ChannelCommunicator(application, f"/ws/job/{world.job.pk}/")
    assert await client.connect()
    reply = await client.receive_frame()
    assert reply == {"type": "auth", "statusCode": 408, "error": "error/auth-timeout"}
    assert await client.receive_close() == 4408


async def test_no_data_before_authentication(application, world):
    client = ChannelCommunicator(application, f"/ws/job/{world.job.pk}/")
    assert await client.connect()
    await db(Task.objects.create)(job=world.job, title="while unauthenticated")
    assert await client.nothing_more()
    await client.disconnect()


async def test_bad_frames_after_auth_get_errors_and_the_socket_stays_open(application, world):
    client = ChannelCommunicator(
        application, f"/ws/job/{world.job.pk}/", token=world.tokens["alice"], channel=JobChannel
    )
    assert (await client.authenticate())["statusCode"] == 200
    await client.initial_state()
    for frame, message in [
        ("{not json", "frame is not valid JSON"),
        ({"what": "ever"}, "unknown message"),
        ([1, 2, 3], "unknown message"),
        ({"token": world.tokens["alice"]}, "already authenticated"),
    ]:
        await client.send_frame(frame)
        reply = await client.receive_frame()
        assert reply == {"type": "error", "error": {"code": 400, "message": message}}
    with override_settings(RX_MAX_MESSAGE_SIZE=64):
        await client.send_frame({"padding": "x" * 100})
        reply = await client.receive_frame()
        assert reply["type"] == "error" and reply["error"]["message"] == "frame too large"
        # The limit counts bytes: 30 characters of 3 bytes each are 90 bytes.
        await client.send_frame({"p": "€" * 30})
        reply = await client.receive_frame()
        assert reply["type"] == "error" and reply["error"]["message"] == "frame too large"

    def rename():
        task = Task.objects.get(pk=world.tasks[0].pk)
        task.title = "still connected"
        task.save()

    await db(rename)()
    assert (await client.receive_records())[0]["title"] == "still connected"
    await client.disconnect()
