"""Who a client is, beyond DRF tokens: the session cookie and a JWT (``RX_AUTHENTICATORS``).

Over real sockets to a server in a subprocess (the test project wraps its routes in
``AuthMiddlewareStack`` and lists the JWT authenticator of ``docs/channels.md``):

* a logged-in browser connects with ``{"token": null}`` and its session cookie, and is
  served the state its user may see; without a logged-in session it is refused (401);
* logging out ends the access: the next write is refused and the socket closes with
  4401, and the row is unchanged;
* a simplejwt access token authenticates; once it has expired, the next re-check closes
  the socket with 4401;
* the JWT example in the docs is the code the test project runs.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from channels.db import database_sync_to_async as db
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

from rxdjango.testing import timeout

from jobs.models import Task
from support import SocketClient, World, converges, job_state, running_server

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _session_cookie(world: World) -> str:
    client = Client()
    client.force_login(world.alice)
    return f"sessionid={client.cookies['sessionid'].value}"


def _logout(cookie: str) -> None:
    client = Client()
    client.cookies.load(cookie)
    client.logout()


def _write(title: str, task_pk: int) -> str:
    frame = {
        "type": "write",
        "writeId": 1,
        "operation": "save",
        "instanceType": "jobs.serializers.TaskSerializer",
        "instanceId": task_pk,
        "data": {"title": title},
    }
    return orjson.dumps(frame).decode()


async def test_a_logged_in_browser_connects_with_its_session_cookie(world):
    cookie = await db(_session_cookie)(world)
    with running_server() as server:
        url = f"{server.url}/ws/job/{world.job.pk}/"
        browser = SocketClient(url, None, headers={"Cookie": cookie})
        await browser.open()
        await converges(browser.read, browser.state, job_state(world))

        anonymous = SocketClient(url, None)
        with pytest.raises(AssertionError, match="401"):
            await anonymous.open()

        await db(_logout)(cookie)
        task = world.tasks[0]
        await browser.ws.send(_write("written after logout", task.pk))
        assert await browser.close_code() == 4401
        assert (await db(Task.objects.get)(pk=task.pk)).title == task.title


async def test_a_jwt_authenticates_until_it_expires(world):
    def short_lived() -> str:
        token = AccessToken.for_user(world.alice)
        token.set_exp(lifetime=timedelta(seconds=timeout(1.0)))
        return str(token)

    token = await db(short_lived)()
    with running_server({"RX_TEST_PERMISSION_RECHECK": "0.2"}) as server:
        url = f"{server.url}/ws/job/{world.job.pk}/"
        client = SocketClient(url, token)
        await client.open()
        await converges(client.read, client.state, job_state(world))
        # the token expires after one unit; a re-check after that closes the socket
        assert await client.close_code(units=5) == 4401

        refused = SocketClient(url, token)
        with pytest.raises(AssertionError, match="401"):
            await refused.open()


def test_the_jwt_example_of_the_docs_is_what_the_test_project_runs():
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "channels.md").read_text(), re.S)
    example = next(block for block in blocks if "def simplejwt" in block)
    runs = (Path(__file__).resolve().parent / "jobs" / "jwt_auth.py").read_text()
    assert example == runs
