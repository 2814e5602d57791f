"""Notable events reach the ``rxdjango.events`` logger: one line each, with ids, never
the data (docs/production.md lists them)."""

from __future__ import annotations

import logging

import pytest
from channels.db import database_sync_to_async as db
from django.test.utils import override_settings
from prometheus_client import REGISTRY

from rxdjango.models import CapturedChange
from rxdjango.testing import ChannelCommunicator

from jobs.channels import JobChannel
from jobs.models import Task
from support import RedisTarget, connect, until

pytestmark = pytest.mark.django_db(transaction=True)

JOB_CHANNEL = "jobs.channels.JobChannel"


def events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rxdjango.events" and r.rx_event == name]


async def test_resync_revocation_and_the_relay_lease_are_logged(application, world, caplog):
    caplog.set_level(logging.INFO, logger="rxdjango.events")
    path = f"/ws/job/{world.job.pk}/"
    first = await connect(application, path, world.tokens["alice"])
    await first.disconnect()
    await until(lambda: bool(events(caplog, "relay_lease_taken")))
    [lease] = events(caplog, "relay_lease_taken")
    assert lease.getMessage() == "relay_lease_taken database=default"

    # A cache that forgot the anchor cannot prove a catch-up: the client resyncs.
    assert await db(JobChannel.clear_cache)(world.job.pk)
    await db(Task.objects.filter(pk=world.tasks[0].pk).update)(title="secret title")
    client = ChannelCommunicator(
        application,
        path,
        token=world.tokens["alice"],
        last_update=first.state.last_update,
        channel=JobChannel,
    )
    assert (await client.authenticate())["statusCode"] == 200
    await client.initial_state()
    [resync] = events(caplog, "client_resync")
    assert resync.levelno == logging.INFO
    want = {"channel": JOB_CHANNEL, "anchor": world.job.pk, "user": world.alice.pk}
    assert resync.rx == want
    assert resync.getMessage() == (
        f"client_resync channel={JOB_CHANNEL} anchor={world.job.pk} user={world.alice.pk}"
    )

    await JobChannel.revoke(world.alice.pk)
    assert await client.receive_close() == 4403
    [revoked] = events(caplog, "client_revoked")
    assert revoked.rx == {
        "channel": JOB_CHANNEL,
        "anchors": [world.job.pk],
        "user": world.alice.pk,
        "code": 4403,
    }
    assert revoked.getMessage() == (
        f"client_revoked channel={JOB_CHANNEL} anchors=[{world.job.pk}] "
        f"user={world.alice.pk} code=4403"
    )
    # Ids only: no record's data in any event line.
    assert all("secret title" not in r.getMessage() for r in caplog.records)


@override_settings(RX_RATE_LIMIT=5, RX_USER_RATE_LIMIT=None)
async def test_a_flooding_client_closed_is_logged_once(application, world, caplog):
    caplog.set_level(logging.INFO, logger="rxdjango.events")
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["bob"])
    for call_id in range(40):
        frame = {"callId": call_id, "action": "no_such_action", "params": []}
        await client.send_frame(frame)
    assert await client.receive_close() == 4429
    [closed] = events(caplog, "client_closed_rate_limited")
    assert closed.levelno == logging.WARNING
    assert closed.rx == {"channel": JOB_CHANNEL, "anchors": [world.job.pk], "user": world.bob.pk}


async def test_losing_and_regaining_redis_is_logged(world, private_redis, in_process, caplog):
    caplog.set_level(logging.INFO, logger="rxdjango.events")
    errors, reconnects = (
        REGISTRY.get_sample_value(f"rxdjango_redis_{name}_total") or 0.0
        for name in ("errors", "reconnects")
    )
    target = RedisTarget(private_redis.url, "rx")
    with target.settings():
        from testproject.asgi import application

        client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
        # The relay has propagated the rows logged while the world was built (a
        # propagation cut off by the stop would log an error of its own).
        await until(lambda: not CapturedChange.objects.exists(), units=2)
        private_redis.stop()
        await until(lambda: bool(events(caplog, "redis_lost")), units=2)
        [lost] = events(caplog, "redis_lost")
        assert lost.levelno == logging.WARNING and lost.rx == {"error": "ConnectionError"}
        private_redis.start()
        await until(lambda: bool(events(caplog, "redis_regained")), units=4)
        [regained] = events(caplog, "redis_regained")
        assert regained.rx == {"clients_reloading": 1}
        assert await client.receive_close(2) == 4408  # it may have missed frames
    # And counted (rxdjango.metrics).
    assert REGISTRY.get_sample_value("rxdjango_redis_errors_total") > errors
    assert REGISTRY.get_sample_value("rxdjango_redis_reconnects_total") == reconnects + 1
