"""The whole nested state reaches an authenticated client once, as flat records."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from jobs.channels import JobChannel
from jobs.serializers import JobSerializer

from support import connect, expected_state

pytestmark = pytest.mark.django_db(transaction=True)


async def test_client_state_equals_serializer_output(application, world):
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    expected = await database_sync_to_async(expected_state)(JobSerializer, world.job, world.alice)
    assert client.state.tree() == expected
    await client.disconnect()
