"""The pytest plugin (``rxdjango.pytest_plugin``): its fixtures serve the test project
for real and its clients speak the protocol as browsers do.

* writes through the helpers reach a second client, and the writer holds the record
  when the helper returns; refusals raise with the server's code;
* action results and errors come back by request id;
* ``wait_for`` returns a record that arrives, and times out naming what it waited for
  and what the client holds;
* refused connections raise with the status and close code; a session cookie
  authenticates a client without a token;
* a close by the server, and a reconnect with ``lastUpdate``;
* the plugin is registered through its entry point and imports no Django model.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async as db
from django.db import connection, connections
from django.test import Client

from rxdjango import pytest_plugin
from rxdjango.pytest_plugin import (
    ActionFailed,
    AuthRefused,
    ClientFactory,
    LiveServer,
    RxClient,
    WriteRefused,
)
from rxdjango.testing import ConnectionClosed, timeout

from jobs.channels import JobChannel, ProjectJobsChannel
from jobs.models import Job, Task
from jobs.serializers import JobBriefSerializer, JobSerializer, TaskSerializer
from support import TASK, World, expected_state

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def pair(world: World, rx_client: ClientFactory) -> tuple[RxClient, RxClient]:
    """Alice and Bob on the same job."""
    path = f"/ws/job/{world.job.pk}/"
    alice = await rx_client(JobChannel, path, token=world.tokens["alice"])
    bob = await rx_client(JobChannel, path, token=world.tokens["bob"])
    return alice, bob


async def test_the_client_holds_the_serializers_state(world, rx_client, rx_live_server):
    assert isinstance(rx_live_server, LiveServer)
    assert rx_live_server.url.startswith("ws://127.0.0.1:")
    client = await rx_client(JobChannel, f"/ws/job/{world.job.pk}/", token=world.tokens["alice"])
    want = await db(expected_state)(JobSerializer, world.job, world.alice)
    assert client.tree() == want
    assert client.record(JobSerializer, world.job.pk)["title"] == "Launch"
    assert sorted(r["id"] for r in client.records(TaskSerializer)) == [t.pk for t in world.tasks]


async def test_a_save_reaches_the_other_client(pair, world):
    alice, bob = pair
    task = world.tasks[1]
    await alice.save(TaskSerializer, task.pk, {"title": "renamed"})
    # The server sends the canonical record before the reply.
    assert alice.record(TaskSerializer, task.pk)["title"] == "renamed"
    record = await bob.wait_for(TaskSerializer, {"id": task.pk, "title": "renamed"})
    assert record["title_length"] == len("renamed")
    assert (await db(Task.objects.get)(pk=task.pk)).title == "renamed"


async def test_create_returns_the_new_id_and_delete_removes_it(pair, world):
    alice, bob = pair
    new_id = await alice.create(JobSerializer, world.job.pk, "tasks", {"title": "fresh"})
    assert isinstance(new_id, int)
    assert (await bob.wait_for(TaskSerializer, {"id": new_id}))["title"] == "fresh"
    job = await bob.wait_for(JobSerializer, lambda job: new_id in job["tasks"])
    assert job["id"] == world.job.pk

    await bob.delete(TaskSerializer, new_id)
    assert bob.record(TaskSerializer, new_id) is None
    await alice.wait_until(lambda: alice.record(TaskSerializer, new_id) is None)
    assert not await db(Task.objects.filter(pk=new_id).exists)()


async def test_a_refused_write_raises_with_the_servers_answer(pair, world):
    alice, bob = pair
    task = world.tasks[0]
    with pytest.raises(WriteRefused) as refused:
        await alice.save(TaskSerializer, task.pk, {"title": "forbidden"})
    assert (refused.value.code, refused.value.message) == (403, "not allowed")
    assert alice.record(TaskSerializer, task.pk)["title"] == task.title

    with pytest.raises(WriteRefused) as invalid:
        await alice.save(TaskSerializer, task.pk, {"title": "x" * 101})
    assert invalid.value.code == 400
    assert "title" in invalid.value.detail

    with pytest.raises(ValueError, match="no relation 'nothing'"):
        await alice.create(JobSerializer, world.job.pk, "nothing", {})
    with pytest.raises(ValueError, match="not in the state of JobChannel"):
        await alice.save(JobBriefSerializer, world.job.pk, {})
    assert await bob.quiet()


async def test_action_results_and_errors_come_back(pair, world):
    alice, bob = pair
    results = [
        await alice.call("count_tasks"),
        await alice.call("count_tasks", {"done": False}),
        await bob.call("count_tasks", filters={"done": True}),
        await alice.call("schedule", 7, "2026-03-04"),
        await alice.call("schedule", task_id=7, due="2026-03-04", tags=["a", "b"]),
    ]
    assert results == [
        3,
        3,
        0,
        {"task": "7", "due": "2026-03-04", "tags": ""},
        {"task": "7", "due": "2026-03-04", "tags": "a,b"},
    ]

    with pytest.raises(ActionFailed) as bad:
        await alice.call("count_tasks", "not a dict")
    assert bad.value.code == 400
    with pytest.raises(ActionFailed) as missing:
        await alice.call("no_such_action")
    assert missing.value.code == 403
    with pytest.raises(TypeError, match="not both"):
        await alice.call("schedule", 7, due="2026-03-04")


async def test_a_change_committed_by_the_test_reaches_clients(pair, world):
    alice, _ = pair

    def rename() -> None:
        Job.objects.filter(pk=world.job.pk).update(title="Renamed by the test")

    await db(rename)()
    await alice.wait_for(JobSerializer, {"title": "Renamed by the test"})
    assert alice.tree()["title"] == "Renamed by the test"


async def test_waiting_for_what_never_arrives_fails_clearly(pair, world):
    alice, _ = pair
    with pytest.raises(TimeoutError) as waited:
        await alice.wait_for(TaskSerializer, {"title": "never"}, units=0.05)
    message = str(waited.value)
    assert f"a {TASK} record matching {{'title': 'never'}}" in message
    assert "the client holds 3" in message
    assert "task 0" in message

    def nothing_to_see() -> bool:
        return False

    with pytest.raises(TimeoutError, match=r"s for nothing_to_see\(\) to hold"):
        await alice.wait_until(nothing_to_see, units=0.02)


async def test_refused_connections_raise_with_status_and_close_code(world, rx_client):
    path = f"/ws/job/{world.job.pk}/"
    with pytest.raises(AuthRefused) as unknown:
        await rx_client(JobChannel, path, token="not-a-token")
    assert (unknown.value.status, unknown.value.close_code) == (401, 4401)
    with pytest.raises(AuthRefused) as outsider:
        await rx_client(JobChannel, path, token=world.tokens["carol"])
    assert (outsider.value.status, outsider.value.close_code) == (403, 4403)
    with pytest.raises(AuthRefused) as anonymous:
        await rx_client(JobChannel, path)
    assert anonymous.value.reply == {
        "type": "auth",
        "statusCode": 401,
        "error": "error/unauthorized",
    }


async def test_a_session_cookie_authenticates_without_a_token(world, rx_client):
    def login() -> str:
        browser = Client()
        browser.force_login(world.alice)
        return browser.cookies["sessionid"].value

    cookie = await db(login)()
    client = await rx_client(
        JobChannel, f"/ws/job/{world.job.pk}/", headers={"Cookie": f"sessionid={cookie}"}
    )
    assert client.tree()["id"] == world.job.pk


async def test_a_close_by_the_server_ends_waits_and_requests(pair, world):
    alice, bob = pair
    await JobChannel.revoke(world.bob.pk)
    assert await bob.wait_closed() == 4403
    assert bob.close_code == 4403
    with pytest.raises(ConnectionClosed):
        await bob.wait_for(TaskSerializer, {"title": "never"})
    with pytest.raises(ConnectionClosed):
        await bob.call("count_tasks")
    assert await alice.call("count_tasks") == 3


async def test_reconnecting_catches_up_with_last_update(pair, world):
    alice, bob = pair
    await alice.close()
    task = world.tasks[2]

    def rename() -> None:
        Task.objects.filter(pk=task.pk).update(title="while away")

    await db(rename)()
    # update() sends no signal: the relay propagates it a moment later; Bob sees when.
    await bob.wait_for(TaskSerializer, {"id": task.pk, "title": "while away"})
    received = len(alice.state.received)
    await alice.connect()
    assert alice.record(TaskSerializer, task.pk)["title"] == "while away"
    # A catch-up: only what changed, no resync and full state.
    assert not [c for c in alice.state.controls if c.get("type") == "resync"]
    assert [r["id"] for r in alice.state.received[received:]] == [task.pk]
    want = await db(expected_state)(JobSerializer, world.job, world.alice)
    assert alice.tree() == want


async def test_list_channels_and_an_empty_list(world, rx_client):
    token = world.tokens["alice"]
    jobs = await rx_client(ProjectJobsChannel, f"/ws/project/{world.project.pk}/jobs/", token)
    assert [job["title"] for job in jobs.tree()] == ["Launch", "Landing"]
    nothing = await rx_client(ProjectJobsChannel, "/ws/project/0/jobs/", token)
    assert nothing.tree() == []


def test_the_plugin_is_registered_through_its_entry_point(request):
    entry = importlib.metadata.entry_points(group="pytest11", name="rxdjango")
    assert [e.value for e in entry] == ["rxdjango.pytest_plugin"], (
        "reinstall the package (make venv) so its pytest11 entry point is registered"
    )
    assert request.config.pluginmanager.get_plugin("rxdjango") is pytest_plugin


def test_an_in_memory_sqlite_test_database_is_refused(monkeypatch):
    from django.db.backends.sqlite3.base import DatabaseWrapper

    # The name Django gives an in-memory SQLite test database.
    name = "file:memorydb_default?mode=memory&cache=shared"
    memory = DatabaseWrapper({**connection.settings_dict, "NAME": name}, alias="default")
    monkeypatch.setattr(connections, "all", lambda **_: [memory])
    with pytest.raises(pytest.fail.Exception, match="in-memory SQLite test database 'default'"):
        pytest_plugin._refuse_in_memory_sqlite()


def test_importing_the_plugin_touches_no_django_model_or_setting():
    probe = (
        "import sys, rxdjango.pytest_plugin\n"
        "from django.conf import settings\n"
        "assert not settings.configured\n"
        "loaded = [m for m in sys.modules if m.startswith(('django.db', 'rest_framework'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=timeout(2)
    )
    assert done.returncode == 0, done.stderr
