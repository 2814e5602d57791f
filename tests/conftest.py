"""Shared fixtures: a fresh cache per test and the job tree in the real database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from channels.db import database_sync_to_async

from rxdjango._relay import stop_relays
from rxdjango.testing import reset_state

from support import SHARED_REDIS, PrivateRedis, RedisTarget, World, build_world


@pytest.fixture(autouse=True)
def _fresh_cache():
    reset_state()
    yield
    reset_state()


@pytest.fixture(autouse=True)
def _no_silent_errors(request, caplog):
    """Propagation errors are logged, not raised: a test must not pass over one."""
    yield
    if request.node.get_closest_marker("rx_errors_expected"):
        return
    errors = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.name == "rxdjango" and record.levelno >= logging.ERROR
    ]
    assert not errors, f"rxdjango logged errors: {errors}"


@pytest.fixture
def embedded_backend():
    """Run this test on the embedded backend, whatever the suite's backend is."""
    from django.test import override_settings

    reset_state()
    with override_settings(REDIS_URL=None):
        yield
        reset_state()


@pytest.fixture
def application():
    from testproject.asgi import application

    return application


@pytest.fixture
async def world(transactional_db) -> AsyncIterator[World]:
    yield await database_sync_to_async(build_world)()
    stop_relays()  # before the database is flushed: a relay reading it would deadlock it


@pytest.fixture
def world_sync(transactional_db) -> Iterator[World]:
    yield build_world()
    stop_relays()


@pytest.fixture
def shared_redis() -> Iterator[RedisTarget]:
    target = RedisTarget(SHARED_REDIS, f"rx-test-{uuid.uuid4().hex[:10]}")
    yield target
    client = target.client()
    for name in client.scan_iter(match=f"{target.prefix}:*"):
        client.delete(name)
    client.close()


@pytest.fixture
def in_process() -> Iterator[None]:
    """Forget the suite's backend before and after (settings decide the next one)."""
    reset_state()
    yield
    reset_state()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()
