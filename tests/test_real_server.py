"""The same protocol through a real ASGI server (uvicorn) and a real WebSocket client."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import websockets
from channels.db import database_sync_to_async as db
from django.db import connection

from rxdjango.testing import timeout

from jobs.models import Task
from jobs.serializers import JobSerializer
from support import expected_state

pytestmark = pytest.mark.django_db(transaction=True)

TESTS_DIR = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(transactional_db):
    """uvicorn serving the test project, on the database the test writes to."""
    port = _free_port()
    env = dict(os.environ)
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        env["PGDATABASE"] = settings["NAME"]
    else:
        env["RX_SQLITE_NAME"] = str(settings["NAME"])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "testproject.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=TESTS_DIR,
        env=env,
    )
    deadline = time.monotonic() + timeout(4)
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("uvicorn did not start")
    yield f"ws://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout(2))


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
