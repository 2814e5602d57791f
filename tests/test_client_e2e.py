"""The generated TypeScript and the built client, checked by the TypeScript compiler and
run in Node against a real server of the test project.

Needs the client built (``make client``, which ``make test`` runs first).
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async as db
from django.core.management import call_command
from django.test.utils import override_settings

from rxdjango.testing import timeout

from jobs.models import Task
from jobs.serializers import JobSerializer
from support import TESTS_DIR, expected_state, run_command, running_server

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_DIR = TESTS_DIR.parent / "client"
FIXTURES = TESTS_DIR / "client_e2e"


def _workspace(directory: Path) -> Path:
    """Generated files, the TypeScript fixtures and a node_modules pointing at the client."""
    assert (CLIENT_DIR / "dist" / "index.d.ts").exists(), "build the client first: make client"
    call_command("makefrontend", "--output", str(directory), stdout=StringIO(), stderr=StringIO())
    for name in ("usage.ts", "driver.ts", "tsconfig.json"):
        shutil.copy(FIXTURES / name, directory / name)
    modules = directory / "node_modules"
    (modules / "@rxdjango").mkdir(parents=True)
    (modules / "@rxdjango" / "react").symlink_to(CLIENT_DIR)
    (modules / "ws").symlink_to(CLIENT_DIR / "node_modules" / "ws")
    (modules / "@types").symlink_to(CLIENT_DIR / "node_modules" / "@types")
    return directory


def _tsc(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLIENT_DIR / "node_modules" / ".bin" / "tsc"), "-p", str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout(24),
    )


def test_generated_typescript_compiles_under_strict(tmp_path):
    # A base URL that would break code pasted in raw still yields a valid string literal.
    awkward = 'wss://example.com/"quoted"\n</script>/'
    with override_settings(RX_WEBSOCKET_URL=awkward):
        workspace = _workspace(tmp_path)
    compiled = _tsc(workspace)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert (
        f"static baseURL = {json.dumps(awkward)};" in (workspace / "jobs.channels.ts").read_text()
    )


class _Driver:
    """The Node driver process, read line by line (JSON events)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            ["node", *args], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def expect(self, event: str) -> dict[str, Any]:
        message = json.loads(self.lines.get(timeout=timeout(4)))
        assert message["event"] == event, message
        return message

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout(1))


async def test_built_client_in_node_against_a_real_server(
    world, shared_redis, in_process, tmp_path
):
    workspace = _workspace(tmp_path)
    compiled = await db(_tsc)(workspace)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    first, second = world.tasks[0].pk, world.tasks[1].pk
    env = shared_redis.server_env()
    with running_server(env) as server:
        job, token = str(world.job.pk), world.tokens["alice"]
        arguments = ["out/driver.js", f"{server}/", job, token, str(first), str(second)]
        driver = _Driver(arguments, workspace)
        try:
            ready = await db(driver.expect)("ready")
            assert ready["tasks"] == 3
            # A change committed by another process reaches the Node client.
            await db(run_command)(
                "edit_task", str(first), "--title", "changed on the server", extra_env=env
            )
            driver.send(f"title {first} changed on the server")
            await db(driver.expect)("saw")
            driver.send("go")
            actions = await db(driver.expect)("actions")
            assert actions["pending"] == actions["all"] == 3
            assert actions["scheduled"] == {"task": str(first), "due": "2026-12-01", "tags": "a,b"}
            assert actions["rejected"] == 403
            writes = await db(driver.expect)("writes")
            assert writes["optimistic"] == "saved from node", "applied before the server answered"
            assert writes["refused"] == 403 and writes["rolledBack"] is True
            created = writes["created"]
            assert await db(Task.objects.filter(pk=created, title="created from node").exists)()
            final = (await db(driver.expect)("final"))["state"]
        finally:
            await db(driver.close)()
    assert not await db(Task.objects.filter(pk=second).exists)()
    assert final == await db(expected_state)(JobSerializer, world.job, world.alice)
