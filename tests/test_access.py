"""Access holds for as long as a socket is open, and one user cannot take the server.

Over real sockets, on the embedded backend (a server in this process) and on Redis
(two server processes, the sockets of one user spread over both):

* a deleted token, a deactivated or deleted user closes every socket of that user
  with 4401 right after the commit, in every process (also when another process
  commits it); ``ContextChannel.revoke`` closes that user's sockets of that anchor (or
  channel) with 4403, awaited or not, and nobody else's;
* after a membership ends, a write or an action is refused (403, nothing changes)
  and the socket closes with 4403; an idle socket is closed at its next re-check;
* ``RX_MAX_CONNECTIONS_PER_USER`` (across processes), ``RX_MAX_DETACHED_ACTIONS`` and
  ``RX_USER_RATE_LIMIT`` bound what one user may hold or send.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async as db
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from rxdjango.exceptions import AnchorDoesNotExist, ClientError, ForbiddenError, UnauthorizedError
from rxdjango.testing import timeout

from jobs.channels import JobChannel
from jobs.models import Participant, Task
from support import SocketClient, World, deployment, run_command

# The servers of these tests run on the backend each test chooses.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.own_backend]

BACKENDS = ["embedded", "redis"]


def job_url(urls: list[str], index: int, job_pk: int) -> str:
    return f"{urls[index % len(urls)]}/ws/job/{job_pk}/"


async def opened(url: str, token: str) -> SocketClient:
    client = SocketClient(url, token)
    await client.open()
    return client


async def reply(client: SocketClient, kind: str) -> dict:
    """The next control message of ``kind``, past the records that come before it."""
    while True:
        frame = await client.read()
        if isinstance(frame, dict) and frame.get("type") == kind:
            return frame


async def still_served(client: SocketClient, world: World, title: str) -> None:
    """The client receives a change committed now (its socket is open and live)."""

    def rename() -> None:
        task = Task.objects.get(pk=world.tasks[1].pk)
        task.title = title
        task.save()

    await db(rename)()
    await client.records_until(lambda r: r.get("title") == title)


def _deactivate(world: World) -> None:
    user = get_user_model().objects.get(pk=world.bob.pk)
    user.is_active = False
    user.save()


REVOCATIONS = {
    "token deleted": lambda world: Token.objects.filter(user=world.bob).delete(),
    "user deactivated": _deactivate,
    "user deleted": lambda world: get_user_model().objects.filter(pk=world.bob.pk).delete(),
}


@pytest.mark.parametrize("how", sorted(REVOCATIONS))
@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_end_of_a_users_access_closes_every_socket_of_theirs(
    world, shared_redis, backend, how
):
    with deployment(backend, shared_redis, RX_PERMISSION_RECHECK=None) as urls:
        bobs = [await opened(job_url(urls, i, world.job.pk), world.tokens["bob"]) for i in (0, 1)]
        alice = await opened(job_url(urls, 1, world.job.pk), world.tokens["alice"])
        await db(REVOCATIONS[how])(world)
        for bob in bobs:
            assert await bob.close_code() == 4401
        await still_served(alice, world, f"after {how}")
        await alice.close()


async def test_a_token_deleted_by_another_process_closes_the_sockets(world, shared_redis):
    with deployment("redis", shared_redis, RX_PERMISSION_RECHECK=None) as urls:
        bobs = [await opened(job_url(urls, i, world.job.pk), world.tokens["bob"]) for i in (0, 1)]
        code = (
            "from rest_framework.authtoken.models import Token; "
            f"Token.objects.filter(user_id={world.bob.pk}).delete()"
        )
        await asyncio.to_thread(
            run_command, "shell", "-c", code, extra_env=shared_redis.server_env()
        )
        for bob in bobs:
            assert await bob.close_code() == 4401


@pytest.mark.parametrize("backend", BACKENDS)
async def test_revoke_closes_that_users_sockets_of_that_anchor_and_no_others(
    world, shared_redis, backend
):
    with deployment(backend, shared_redis, RX_PERMISSION_RECHECK=None) as urls:
        bob_job = await opened(job_url(urls, 0, world.job.pk), world.tokens["bob"])
        bob_other = await opened(job_url(urls, 1, world.other_job.pk), world.tokens["bob"])
        alice = await opened(job_url(urls, 1, world.job.pk), world.tokens["alice"])

        await db(JobChannel.revoke)(world.bob.pk, world.job.pk)  # a plain call
        assert await bob_job.close_code() == 4403
        await still_served(alice, world, "after revoking one anchor")
        assert not bob_other.ws.close_code, "bob's socket of another anchor stays open"

        await JobChannel.revoke(world.bob.pk)  # awaited, every anchor of the channel
        assert await bob_other.close_code() == 4403
        await still_served(alice, world, "after revoking the channel")
        await alice.close()


def _end_membership(world: World) -> None:
    Participant.objects.filter(user=world.bob).delete()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_write_after_the_membership_ended_is_refused_and_closes(
    world, shared_redis, backend
):
    with deployment(backend, shared_redis, RX_PERMISSION_RECHECK=None) as urls:
        bob = await opened(job_url(urls, 0, world.job.pk), world.tokens["bob"])
        await db(_end_membership)(world)
        task = world.tasks[2]
        await bob.ws.send(
            orjson.dumps(
                {
                    "type": "write",
                    "writeId": 1,
                    "operation": "save",
                    "instanceType": "jobs.serializers.TaskSerializer",
                    "instanceId": task.pk,
                    "data": {"title": "written after the end"},
                }
            ).decode()
        )
        assert await reply(bob, "writeResponse") == {
            "type": "writeResponse",
            "writeId": 1,
            "success": False,
            "error": {"code": 403, "message": "not allowed"},
        }
        assert await bob.close_code() == 4403
        assert (await db(Task.objects.get)(pk=task.pk)).title == task.title


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_action_after_the_membership_ended_is_refused_and_closes(
    world, shared_redis, backend
):
    with deployment(backend, shared_redis, RX_PERMISSION_RECHECK=None) as urls:
        bob = await opened(job_url(urls, 1, world.job.pk), world.tokens["bob"])
        await db(_end_membership)(world)
        await bob.ws.send(
            orjson.dumps(
                {"callId": 7, "action": "rename_repeatedly", "params": [world.tasks[0].pk, 1, "x"]}
            ).decode()
        )
        assert await reply(bob, "actionResponse") == {
            "type": "actionResponse",
            "callId": 7,
            "error": {"code": 403, "message": "not allowed"},
        }
        assert await bob.close_code() == 4403
        assert (await db(Task.objects.get)(pk=world.tasks[0].pk)).title == world.tasks[0].title


def _deactivate_behind_the_orms_back(world: World) -> None:
    get_user_model().objects.filter(pk=world.alice.pk).update(is_active=False)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_idle_sockets_are_rechecked(world, shared_redis, backend):
    """No signal tells of a membership deleted or a user deactivated by an update(): the
    periodic re-check finds both."""
    with deployment(backend, shared_redis, RX_PERMISSION_RECHECK=0.2) as urls:
        bob = await opened(job_url(urls, 0, world.job.pk), world.tokens["bob"])
        alice = await opened(job_url(urls, 1, world.job.pk), world.tokens["alice"])
        await db(_end_membership)(world)
        assert await bob.close_code(units=4) == 4403
        await asyncio.sleep(timeout(0.2))  # several re-checks of alice's socket
        await still_served(alice, world, "alice may still see the job")
        await db(_deactivate_behind_the_orms_back)(world)
        assert await alice.close_code(units=4) == 4401


@pytest.mark.parametrize("backend", BACKENDS)
async def test_one_user_may_hold_a_limited_number_of_sockets(world, shared_redis, backend):
    with deployment(backend, shared_redis, RX_MAX_CONNECTIONS_PER_USER=3) as urls:
        bobs = [await opened(job_url(urls, i, world.job.pk), world.tokens["bob"]) for i in range(3)]
        refused = SocketClient(job_url(urls, 3, world.job.pk), world.tokens["bob"])
        with pytest.raises(AssertionError, match="too-many-connections"):
            await refused.open()
        assert await refused.close_code() == 4429
        alice = await opened(job_url(urls, 0, world.job.pk), world.tokens["alice"])
        await alice.close()
        await bobs[0].close()
        deadline = time.monotonic() + timeout(2)
        while True:  # on Redis the slot is given back in the background
            again = SocketClient(job_url(urls, 1, world.job.pk), world.tokens["bob"])
            try:
                await again.open()
                break
            except AssertionError:
                assert time.monotonic() < deadline, "a closed socket never gave its slot back"
                await asyncio.sleep(0.05)
        for bob in [*bobs[1:], again]:
            await bob.close()


async def test_detached_actions_of_one_connection_are_capped(world, shared_redis):
    with deployment("embedded", shared_redis, RX_MAX_DETACHED_ACTIONS=4) as urls:
        client = await opened(job_url(urls, 0, world.job.pk), world.tokens["alice"])
        for call_id in range(1, 7):
            call = {"callId": call_id, "action": "linger", "params": [timeout(0.4)]}
            await client.ws.send(orjson.dumps(call).decode())
        refusals = [await client.read(), await client.read()]
        assert refusals == [
            {
                "type": "actionResponse",
                "callId": call_id,
                "error": {"code": 429, "message": "too many detached actions running"},
            }
            for call_id in (5, 6)
        ]
        results = {(await client.read())["callId"] for _ in range(4)}
        assert results == {1, 2, 3, 4}
        # Finished ones free their places.
        await client.ws.send(
            orjson.dumps({"callId": 9, "action": "linger", "params": [0]}).decode()
        )
        assert (await client.read())["result"] == 0
        await client.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_rate_limit_also_holds_per_user(world, shared_redis, backend):
    """Three sockets of one user share one budget; another user keeps theirs."""
    settings = {"RX_RATE_LIMIT": 1000, "RX_USER_RATE_LIMIT": 20}
    with deployment(backend, shared_redis, **settings) as urls:
        url = job_url(urls, 0, world.job.pk)  # one process: the budget is per process
        bobs = [await opened(url, world.tokens["bob"]) for _ in range(3)]
        alice = await opened(url, world.tokens["alice"])
        for bob in bobs:
            for call_id in range(10):
                call = {"callId": call_id, "action": "count_tasks", "params": []}
                await bob.ws.send(orjson.dumps(call).decode())
        replies = [await bob.read() for bob in bobs for _ in range(10)]
        refused = [r for r in replies if r.get("type") == "error"]
        # Each socket alone may send 1,000 frames a second: only the user's shared
        # budget (20, refilling at 20 a second) refuses any of these 30.
        assert refused and all(r["error"]["code"] == 429 for r in refused), replies
        await alice.ws.send(
            orjson.dumps({"callId": 1, "action": "count_tasks", "params": []}).decode()
        )
        assert (await alice.read())["result"] == len(world.tasks)
        for client in [*bobs, alice]:
            await client.close()


class _ChannelOf:
    """The part of a connected channel a re-check reads: its hook and route kwargs."""

    def __init__(self, has_permission: Any) -> None:
        self.has_permission = has_permission
        self.kwargs = {"job_id": 1}


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (AnchorDoesNotExist(), 404),
        (UnauthorizedError(), 401),
        (ForbiddenError(), 403),
        (ClientError("odd", status=418), 403),
    ],
)
def test_a_recheck_refuses_with_the_status_has_permission_raises(world, raised, status):
    """As at admission: an anchor deleted while its socket is open answers 404 (close
    4404), not an internal error logged at every re-check."""
    from rxdjango._access import Credential, recheck_sync
    from rxdjango._state_model import pk_repr

    def refuse(user: Any, job_id: int) -> bool:
        raise raised

    credential = Credential(pk_repr(world.bob.pk), None, lambda token, scope: world.bob, {})
    assert recheck_sync(_ChannelOf(refuse), credential) == status
    assert recheck_sync(_ChannelOf(lambda user, job_id: True), credential) is None


def _user_reads(queries: list[dict[str, Any]]) -> int:
    return sum('"auth_user"' in query["sql"] for query in queries)


def test_a_recheck_of_a_drf_token_reads_the_user_with_the_token(world):
    """The token's query brings the user row: the re-check before every write reads
    it once, and a user deactivated where no signal sees it is still refused."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rxdjango._access import Credential, recheck_sync
    from rxdjango._state_model import pk_repr
    from rxdjango.auth import drf_token

    allowed = _ChannelOf(lambda user, job_id: True)
    credential = Credential(pk_repr(world.bob.pk), world.tokens["bob"], drf_token, {})
    with CaptureQueriesContext(connection) as queries:
        assert recheck_sync(allowed, credential) is None
    assert _user_reads(queries.captured_queries) == 1

    get_user_model().objects.filter(pk=world.bob.pk).update(is_active=False)
    assert recheck_sync(allowed, credential) == 401


def test_a_recheck_reads_again_the_user_an_authenticator_answers_from_its_own_data(world):
    """An authenticator may answer without the database (a JWT's claims): the user's
    row is read again, so a deactivation it cannot see still ends the access."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rxdjango._access import Credential, recheck_sync
    from rxdjango._state_model import pk_repr

    bob = world.bob  # read once, at "login": what a JWT's claims would say
    allowed = _ChannelOf(lambda user, job_id: True)
    credential = Credential(pk_repr(bob.pk), "claims", lambda token, scope: bob, {})
    with CaptureQueriesContext(connection) as queries:
        assert recheck_sync(allowed, credential) is None
    assert _user_reads(queries.captured_queries) == 1

    get_user_model().objects.filter(pk=bob.pk).update(is_active=False)
    assert recheck_sync(allowed, credential) == 401
