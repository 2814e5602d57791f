"""The same protocol through a real ASGI server (uvicorn) and a real WebSocket client."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import websockets
from channels.db import database_sync_to_async as db
from django.core.management import call_command
from django.test.utils import override_settings

from rxdjango.testing import timeout

from jobs.models import Task
from jobs.serializers import JobSerializer
from support import expected_state, running_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(transactional_db):
    with running_server() as url:
        yield url


async def test_big_initial_state_arrives_in_frames_under_one_mebibyte(server, world):
    def grow():
        Task.objects.bulk_create(
            Task(job=world.job, title=f"{i:05d} " + "x" * 90) for i in range(12000)
        )

    await db(grow)()
    frames = []
    async with websockets.connect(f"{server}/ws/job/{world.job.pk}/", max_size=2**20) as ws:
        await ws.send(orjson.dumps({"token": world.tokens["alice"], "lastUpdate": None}).decode())
        assert orjson.loads(await ws.recv()) == {"type": "auth", "statusCode": 200}
        assert orjson.loads(await ws.recv())["type"] == "initialAnchors"
        records = []
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout(2))
            frames.append(len(raw))
            batch = orjson.loads(raw)
            records.extend(batch)
            if batch[-1]["_operation"] == "end_initial_state":
                break
    assert sum(frames) > 2**20, "the state must be bigger than one frame may be"
    assert max(frames) < 2**20
    tasks = [r for r in records if r["_instance_type"].endswith("TaskSerializer")]
    assert len(tasks) == 12003
    expected = await db(expected_state)(JobSerializer, world.job, world.alice)
    job = next(r for r in records if r["_instance_type"].endswith("JobSerializer"))
    assert job["tasks"] == [t["id"] for t in expected["tasks"]]


async def test_system_message_command_reaches_another_process(world, transactional_db):
    prefix = f"rx-test-{uuid.uuid4().hex[:8]}"
    layer_env = {"RX_TEST_CHANNEL_LAYER": "redis", "RX_TEST_LAYER_PREFIX": prefix}
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"], "prefix": prefix},
        }
    }
    with running_server(layer_env) as url:
        async with websockets.connect(f"{url}/ws/job/{world.job.pk}/") as ws:
            await ws.send(orjson.dumps({"token": world.tokens["alice"]}).decode())
            while True:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), timeout()))
                if isinstance(frame, list) and frame[-1]["_operation"] == "end_initial_state":
                    break
            with override_settings(CHANNEL_LAYERS=layers):
                await db(call_command)("broadcast_system_message", "going down", "--maintenance")
            message = orjson.loads(await asyncio.wait_for(ws.recv(), timeout()))
            assert message == {
                "type": "maintenance",
                "source": "maintenance",
                "message": "going down",
            }
