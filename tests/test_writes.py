"""Optimistic writes: every operation, and every layer of refusal, over the socket."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.forms.models import model_to_dict
from django.urls import path

from rxdjango import _writes
from rxdjango.channels import ContextChannel
from rxdjango.exceptions import ChannelDeclarationError
from rxdjango.operations import CREATE, SAVE

from jobs.channels import JobChannel
from jobs.models import Asset, Job, Label, Note, Participant, Project, Task
from jobs.serializers import JobSerializer, LabelSerializer, TaskSerializer
from support import (
    ASSET,
    JOB,
    LABEL,
    NOTE,
    TASK,
    connect,
    expected_state,
    make_user,
    records_until,
    type_name,
)

pytestmark = pytest.mark.django_db(transaction=True)


def snapshot_db():
    """Everything a refused write could have touched."""
    return {
        "tasks": sorted(
            (t.pk, t.title, t.done, t.job_id, t.developer_id) for t in Task.objects.all()
        ),
        "notes": sorted((n.pk, n.text, n.owner_id, n.job_id) for n in Note.objects.all()),
        "assets": sorted((str(a.pk), a.name) for a in Asset.objects.all()),
        "jobs": sorted(model_to_dict(j, fields=["id", "title"]).items() for j in Job.objects.all()),
        "labels": sorted((label.pk, label.name) for label in Label.objects.all()),
    }


async def write(client, **frame):
    await client.send_frame({"type": "write", **frame})
    while True:
        reply = await client.receive_frame()
        if isinstance(reply, dict) and reply.get("type") in ("writeResponse", "error"):
            return reply


async def refused(client, status, **frame):
    before = await db(snapshot_db)()
    reply = await write(client, **frame)
    assert reply["success"] is False, reply
    assert reply["error"]["code"] == status, reply
    assert await db(snapshot_db)() == before, "a refused write changed the database"
    return reply


async def job_client(world, user="alice"):
    return await connect_path(f"/ws/job/{world.job.pk}/", world.tokens[user])


async def connect_path(path_, token):
    from testproject.asgi import application

    return await connect(application, path_, token)


async def test_save_create_delete_and_the_canonical_records(world):
    alice = await job_client(world)
    bob = await job_client(world, "bob")
    task = world.tasks[1]

    reply = await write(
        alice,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=task.pk,
        data={"title": "saved", "done": True},
    )
    assert reply == {"type": "writeResponse", "writeId": 1, "success": True}
    assert (await db(Task.objects.get)(pk=task.pk)).title == "saved"
    # The canonical record reached the writer before the reply, and everyone else.
    assert any(r.get("title") == "saved" for r in alice.state.received)
    bob_update = (await bob.receive_records())[0]
    assert bob_update["title"] == "saved" and bob_update["done"] is True

    reply = await write(
        alice,
        writeId=2,
        operation="create",
        instanceType=TASK,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="tasks",
        data={"title": "created"},
    )
    assert reply["success"] is True
    new_pk = reply["instanceId"]
    created = await db(Task.objects.get)(pk=new_pk)
    assert created.job_id == world.job.pk and created.title == "created"
    bob_records = await records_until(bob, lambda r: r["_operation"] == "create")
    assert ("TaskSerializer", new_pk) in {(type_name(r), r["id"]) for r in bob_records}

    reply = await write(alice, writeId=3, operation="delete", instanceType=TASK, instanceId=new_pk)
    assert reply["success"] is True
    assert not await db(Task.objects.filter(pk=new_pk).exists)()
    await records_until(bob, lambda r: r["_operation"] == "delete")
    for client, user in ((alice, world.alice), (bob, world.bob)):
        assert client.state.tree() == await db(expected_state)(JobSerializer, world.job, user)
    await alice.disconnect()
    await bob.disconnect()


async def test_single_nested_relation_is_written_as_a_pk(world):
    alice = await job_client(world)
    bob_participant = await db(Participant.objects.get)(user=world.bob)
    reply = await write(
        alice,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[1].pk,
        data={"developer": bob_participant.pk},
    )
    assert reply["success"] is True
    assert (await db(Task.objects.get)(pk=world.tasks[1].pk)).developer_id == bob_participant.pk
    reply = await write(
        alice,
        writeId=2,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[1].pk,
        data={"developer": None},
    )
    assert reply["success"] is True

    def outsider():
        user, _ = make_user("mallory")
        return Participant.objects.create(
            project=Project.objects.create(name="Other"), user=user
        ).pk

    outsider_pk = await db(outsider)()
    reply = await refused(
        alice,
        400,
        writeId=3,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[1].pk,
        data={"developer": outsider_pk},
    )
    assert "outside" in reply["error"]["message"]
    await alice.disconnect()


async def test_undeclared_types_and_operations_are_403_before_any_database_access(
    world, monkeypatch
):
    alice = await job_client(world)
    performed = []
    monkeypatch.setattr(_writes, "perform_write", lambda *a: performed.append(a))
    label = world.labels[0].pk
    cases = [
        dict(operation="save", instanceType=LABEL, instanceId=label, data={"name": "x"}),
        dict(operation="delete", instanceType=JOB, instanceId=world.job.pk),
        dict(operation="save", instanceType=ASSET, instanceId="whatever", data={"name": "x"}),
        dict(
            operation="create",
            instanceType=LABEL,
            parentType=TASK,
            parentId=1,
            relationName="labels",
            data={"name": "x"},
        ),
    ]
    for index, case in enumerate(cases):
        reply = await write(alice, writeId=index, **case)
        assert reply["error"]["code"] == 403, reply
    assert performed == []
    await alice.disconnect()


async def test_malformed_writes(world):
    alice = await job_client(world)
    reply = await write(alice, operation="save", instanceType=TASK, instanceId=1, data={})
    assert reply == {"type": "error", "error": {"code": 400, "message": "a write needs a writeId"}}
    for index, frame in enumerate(
        [
            dict(instanceType=TASK, instanceId=1),  # no operation
            dict(operation="upsert", instanceType=TASK, instanceId=1),
            dict(operation="save", instanceType="jobs.serializers.Nope", instanceId=1),
            dict(operation="save", instanceType=TASK),  # no instanceId
            dict(operation="save", instanceType=TASK, instanceId=1, data=[1]),
            dict(operation="create", instanceType=TASK, parentType=JOB, data={}),
            dict(
                operation="create",
                instanceType=TASK,
                parentType=JOB,
                parentId=world.job.pk,
                relationName="asset_set",
                data={"title": "x"},
            ),
            dict(
                operation="create",
                instanceType=TASK,
                parentType=JOB,
                parentId=world.job.pk,
                relationName="nope",
                data={"title": "x"},
            ),
            dict(operation="save", instanceType=TASK, instanceId="not-an-int", data={}),
        ]
    ):
        await refused(alice, 400, writeId=100 + index, **frame)
    await alice.disconnect()


async def test_instances_outside_the_context_are_refused(world):
    alice = await job_client(world)
    elsewhere = await db(Task.objects.create)(job=world.other_job, title="elsewhere")
    await refused(
        alice,
        400,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=elsewhere.pk,
        data={"title": "hijack"},
    )
    await refused(
        alice, 400, writeId=2, operation="delete", instanceType=TASK, instanceId=elsewhere.pk
    )
    await refused(
        alice,
        400,
        writeId=3,
        operation="create",
        instanceType=TASK,
        parentType=JOB,
        parentId=world.other_job.pk,
        relationName="tasks",
        data={"title": "sneaky"},
    )
    await refused(
        alice,
        400,
        writeId=4,
        operation="save",
        instanceType=TASK,
        instanceId=999999,
        data={"title": "ghost"},
    )
    await alice.disconnect()


async def test_a_moved_instance_is_no_longer_writable_from_its_old_anchor(world):
    alice = await job_client(world)
    task = world.tasks[2]

    def move():
        Task.objects.filter(pk=task.pk).update(job=world.other_job)  # even without signals

    await db(move)()
    await refused(
        alice,
        400,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=task.pk,
        data={"title": "too late"},
    )
    await alice.disconnect()


async def test_invalid_data_answers_with_drf_detail(world):
    alice = await job_client(world)
    reply = await refused(
        alice,
        400,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[0].pk,
        data={"title": "x" * 101, "done": "maybe"},
    )
    assert reply["error"]["message"] == "invalid data"
    assert set(reply["error"]["detail"]) == {"title", "done"}
    reply = await refused(
        alice,
        400,
        writeId=2,
        operation="create",
        instanceType=TASK,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="tasks",
        data={},
    )
    assert "title" in reply["error"]["detail"]
    await alice.disconnect()


async def test_database_validators_run_unique_and_unique_together(world):
    alice = await job_client(world)
    reply = await refused(
        alice,
        400,
        writeId=1,
        operation="create",
        instanceType=ASSET,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="asset_set",
        data={"name": "blueprint"},
    )
    assert reply["error"]["detail"] == {"name": ["asset with this name already exists."]}
    reply = await refused(
        alice,
        400,
        writeId=2,
        operation="create",
        instanceType=NOTE,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="notes",
        data={"text": "alice private"},
    )
    assert "non_field_errors" in reply["error"]["detail"]
    ok = await write(
        alice,
        writeId=3,
        operation="create",
        instanceType=ASSET,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="asset_set",
        data={"name": "spare"},
    )
    assert ok["success"] is True and isinstance(ok["instanceId"], str)  # a UUID pk
    await alice.disconnect()


async def test_foreign_keys_in_data_must_stay_inside_the_context(world):
    alice = await job_client(world)
    note = await db(Note.objects.get)(owner=world.alice, job=world.job)
    reply = await refused(
        alice,
        400,
        writeId=1,
        operation="save",
        instanceType=NOTE,
        instanceId=note.pk,
        data={"job": world.other_job.pk},
    )
    assert reply["error"]["message"] == "job points outside this context"
    await alice.disconnect()


async def test_can_hooks_refuse_with_403(world):
    alice = await job_client(world)
    await refused(
        alice,
        403,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[0].pk,
        data={"title": "forbidden"},
    )
    await refused(
        alice,
        403,
        writeId=2,
        operation="create",
        instanceType=TASK,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="tasks",
        data={"title": "forbidden"},
    )
    await db(Task.objects.filter(pk=world.tasks[0].pk).update)(done=True)
    await refused(
        alice, 403, writeId=3, operation="delete", instanceType=TASK, instanceId=world.tasks[0].pk
    )
    await alice.disconnect()


async def test_user_key_records_belong_to_their_writer(world):
    alice = await job_client(world)
    bob = await job_client(world, "bob")
    reply = await write(
        alice,
        writeId=1,
        operation="create",
        instanceType=NOTE,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="notes",
        data={"text": "mine", "owner": world.bob.pk},
    )
    assert reply["success"] is True
    note = await db(Note.objects.get)(pk=reply["instanceId"])
    assert note.owner_id == world.alice.pk, "the server sets the owner"
    assert await bob.nothing_more()  # neither the note nor its id in the job's list

    await refused(
        bob,
        400,
        writeId=2,
        operation="save",
        instanceType=NOTE,
        instanceId=note.pk,
        data={"text": "bob was here"},
    )
    await refused(bob, 400, writeId=3, operation="delete", instanceType=NOTE, instanceId=note.pk)
    await refused(
        alice,
        400,
        writeId=4,
        operation="save",
        instanceType=NOTE,
        instanceId=note.pk,
        data={"owner": world.bob.pk},
    )
    assert (
        await write(alice, writeId=5, operation="delete", instanceType=NOTE, instanceId=note.pk)
    )["success"] is True
    await alice.disconnect()
    await bob.disconnect()


async def test_concurrent_creates_from_two_clients(world):
    alice = await job_client(world)
    bob = await job_client(world, "bob")
    replies = await asyncio.gather(
        write(
            alice,
            writeId=1,
            operation="create",
            instanceType=TASK,
            parentType=JOB,
            parentId=world.job.pk,
            relationName="tasks",
            data={"title": "from alice"},
        ),
        write(
            bob,
            writeId=1,
            operation="create",
            instanceType=TASK,
            parentType=JOB,
            parentId=world.job.pk,
            relationName="tasks",
            data={"title": "from bob"},
        ),
    )
    assert all(r["success"] for r in replies)
    ids = {r["instanceId"] for r in replies}
    assert len(ids) == 2
    for client, user in ((alice, world.alice), (bob, world.bob)):
        while not ids <= {t["id"] for t in client.state.tree()["tasks"]}:
            await client.receive_records()
        assert client.state.tree() == await db(expected_state)(JobSerializer, world.job, user)
    await alice.disconnect()
    await bob.disconnect()


class StrictJobChannel(ContextChannel):
    """Declares writes but keeps the default can_* hooks: everything is denied."""

    class Meta:
        state = JobSerializer()
        writable = {TaskSerializer: [SAVE, CREATE]}


class ExplodingJobChannel(ContextChannel):
    class Meta:
        state = JobSerializer()
        writable = {TaskSerializer: [SAVE]}

    async def can_save(self, instance, data):
        if data.get("title") == "boom":
            raise RuntimeError("internal detail")
        if data.get("title") == "side effect":
            # Runs inside the write's transaction: this row is rolled back with it.
            await sync_to_async(Label.objects.create)(name="written by the hook")
            return False
        # A coroutine hook may use the ORM inside the write's transaction, through
        # asgiref's sync_to_async (which stays in the transaction's thread).
        return await sync_to_async(
            Task.objects.filter(pk=instance.pk, job__title="Launch").exists
        )()


application = URLRouter(
    [
        path("strict/<int:job_id>/", StrictJobChannel.as_asgi()),
        path("exploding/<int:job_id>/", ExplodingJobChannel.as_asgi()),
    ]
)


async def test_can_hooks_default_to_deny(world):
    client = await connect(
        application, f"/strict/{world.job.pk}/", world.tokens["alice"], channel=StrictJobChannel
    )
    await refused(
        client,
        403,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[0].pk,
        data={"title": "nope"},
    )
    await client.disconnect()


@pytest.mark.rx_errors_expected
async def test_a_write_that_raises_answers_500_and_the_socket_stays(world, caplog):
    client = await connect(
        application,
        f"/exploding/{world.job.pk}/",
        world.tokens["alice"],
        channel=ExplodingJobChannel,
    )
    reply = await refused(
        client,
        500,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[0].pk,
        data={"title": "boom"},
    )
    assert reply["error"] == {"code": 500, "message": "internal error"}
    assert "internal detail" in caplog.text
    await refused(
        client,
        403,
        writeId=9,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[0].pk,
        data={"title": "side effect"},
    )
    assert not await db(Label.objects.filter(name="written by the hook").exists)()
    ok = await write(
        client,
        writeId=2,
        operation="save",
        instanceType=TASK,
        instanceId=world.tasks[0].pk,
        data={"title": "async hook allowed it"},
    )
    assert ok["success"] is True
    await client.disconnect()


def test_writable_declaration_errors():
    with pytest.raises(ChannelDeclarationError, match="not a serializer of this channel"):

        class NotInTree(ContextChannel):
            class Meta:
                state = JobSerializer()
                writable = {LabelDetailSerializerStandIn: [SAVE]}

    with pytest.raises(ChannelDeclarationError, match="is not SAVE, CREATE or DELETE"):

        class BadOperation(ContextChannel):
            class Meta:
                state = JobSerializer()
                writable = {TaskSerializer: ["upsert"]}

    with pytest.raises(ChannelDeclarationError, match="must be a list"):

        class NotAList(ContextChannel):
            class Meta:
                state = JobSerializer()
                writable = {LabelSerializer: SAVE}


class LabelDetailSerializerStandIn(LabelSerializer):
    """A serializer that is not part of JobSerializer's tree."""


del JobChannel


class StrictHooksChannel(ContextChannel):
    """can_save / can_create hooks written against what will be applied."""

    class Meta:
        state = JobSerializer()
        writable = {TaskSerializer: [SAVE, CREATE]}

    seen: list = []

    @staticmethod
    def has_permission(user, job_id):
        return True

    def can_save(self, instance, data):
        StrictHooksChannel.seen.append(("save", dict(data)))
        return data["title"].strip() != ""  # a number sent would have no .strip()

    def can_create(self, model_class, parent, data):
        StrictHooksChannel.seen.append(("create", dict(data)))
        return bool(data["title"].strip())


strict = URLRouter([path("strict/<int:job_id>/", StrictHooksChannel.as_asgi())])


async def test_hooks_receive_the_validated_data_of_the_fields_sent(world):
    StrictHooksChannel.seen = []
    client = await connect(
        strict, f"/strict/{world.job.pk}/", world.tokens["alice"], channel=StrictHooksChannel
    )
    task = world.tasks[0]
    saved = await write(
        client,
        writeId=1,
        operation="save",
        instanceType=TASK,
        instanceId=task.pk,
        data={"title": 123},
    )
    assert saved == {"type": "writeResponse", "writeId": 1, "success": True}
    created = await write(
        client,
        writeId=2,
        operation="create",
        instanceType=TASK,
        parentType=JOB,
        parentId=world.job.pk,
        relationName="tasks",
        data={"title": 456, "done": "true"},
    )
    assert created["success"] is True, created
    # What the serializer will apply: strings for the title, a bool for done; only the
    # fields sent (not the parent the server sets).
    assert StrictHooksChannel.seen == [
        ("save", {"title": "123"}),
        ("create", {"title": "456", "done": True}),
    ]
    assert (await db(Task.objects.get)(pk=task.pk)).title == "123"
    await client.disconnect()
