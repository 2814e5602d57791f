"""After the initial state, every committed change reaches clients as a delta."""

from __future__ import annotations

import threading

import pytest
from channels.db import database_sync_to_async as db
from django.db import connection

from rxdjango import _metrics
from rxdjango.models import CapturedChange

from jobs.channels import LabelChannel
from jobs.models import Job, JobSpec, Label, Note, Participant, Project, Task
from jobs.serializers import JobSerializer, LabelDetailSerializer
from support import connect, expected_state, make_user, records_until, type_name, until

pytestmark = pytest.mark.django_db(transaction=True)


def job_path(job) -> str:
    return f"/ws/job/{job.pk}/"


async def assert_converged(client, job, user):
    expected = await db(expected_state)(JobSerializer, job, user)
    assert client.state.tree() == expected


async def test_update_carries_only_changed_fields(application, world):
    client = await connect(application, job_path(world.job), world.tokens["alice"])
    task = world.tasks[1]

    def rename():
        task.title = "renamed task"
        task.save()

    await db(rename)()
    frame = await client.receive_records()
    assert len(frame) == 1
    record = frame[0]
    assert record["_operation"] == "update"
    assert set(record) == {"id", "_instance_type", "_tstamp", "_operation", "title", "title_length"}
    assert record["title"] == "renamed task" and record["title_length"] == 12
    assert record["id"] == task.pk
    await assert_converged(client, world.job, world.alice)
    await client.disconnect()


async def test_save_without_changes_sends_nothing(application, world):
    client = await connect(application, job_path(world.job), world.tokens["alice"])
    await db(world.tasks[0].save)()
    assert await client.nothing_more()
    await client.disconnect()


async def test_create_and_delete_update_the_parent_list(application, world):
    client = await connect(application, job_path(world.job), world.tokens["alice"])
    task = await db(Task.objects.create)(job=world.job, title="new one")
    frame = await client.receive_records()
    ops = {(type_name(r), r["_operation"]) for r in frame}
    assert ops == {("TaskSerializer", "create"), ("JobSerializer", "update")}
    job_update = next(r for r in frame if type_name(r) == "JobSerializer")
    assert job_update["tasks"][-1] == task.pk and set(job_update) >= {"tasks"}
    assert "title" not in job_update
    await assert_converged(client, world.job, world.alice)

    task_pk = task.pk
    await db(task.delete)()
    frame = await client.receive_records()
    deleted = [r for r in frame if r["_operation"] == "delete"]
    assert [(type_name(r), r["id"]) for r in deleted] == [("TaskSerializer", task_pk)]
    assert set(deleted[0]) >= {"id", "_instance_type", "_tstamp", "_operation"}
    await assert_converged(client, world.job, world.alice)
    await client.disconnect()


async def test_a_row_deleted_and_saved_again_by_another_writer_reaches_clients(application, world):
    """Found by the convergence test: a writer deletes a task while another saves its
    stale copy (Django then inserts the row again). The delete's propagation reads the
    task as gone but the job's list, read a moment later, with the task again; the
    second writer's propagation must then bring the task back to clients."""
    client = await connect(application, job_path(world.job), world.tokens["alice"])
    task = world.tasks[1]

    def save_again_in_another_thread() -> None:
        def insert() -> None:
            Task.objects.bulk_create([Task(pk=task.pk, job=world.job, title="saved again")])
            connection.close()

        thread = threading.Thread(target=insert)
        thread.start()
        thread.join()

    def delete_while_another_writer_saves() -> None:
        armed = [True]

        def wrapper(execute, sql, params, many, context):
            if armed[0] and '"jobs_job"' in sql and sql.lstrip().startswith("SELECT"):
                armed[0] = False  # the delete's propagation is about to read the job
                save_again_in_another_thread()
            return execute(sql, params, many, context)

        with connection.execute_wrapper(wrapper):
            Task.objects.get(pk=task.pk).delete()
        assert not armed[0], "the propagation of the delete read the job"
        Task.objects.get(pk=task.pk).save()  # the second writer's own propagation

    await db(delete_while_another_writer_saves)()
    records = await records_until(client, lambda r: r.get("title") == "saved again")
    assert ("TaskSerializer", "delete") in {(type_name(r), r["_operation"]) for r in records}
    await assert_converged(client, world.job, world.alice)
    await client.disconnect()


async def test_many_to_many_changes_on_both_sides(application, world):
    job_client = await connect(application, job_path(world.job), world.tokens["alice"])
    label = world.labels[1]
    label_client = await connect(
        application, f"/ws/label/{label.pk}/", world.tokens["alice"], channel=LabelChannel
    )
    task = world.tasks[2]
    await db(task.labels.add)(label)
    frame = await job_client.receive_records()
    assert {(type_name(r), r["_operation"]) for r in frame} == {
        ("LabelSerializer", "create"),
        ("TaskSerializer", "update"),
    }
    await assert_converged(job_client, world.job, world.alice)
    label_frame = await label_client.receive_records()
    assert [(type_name(r), r["_operation"]) for r in label_frame] == [
        ("TaskBriefSerializer", "create"),
        ("LabelDetailSerializer", "update"),
    ] or {(type_name(r), r["_operation"]) for r in label_frame} == {
        ("TaskBriefSerializer", "create"),
        ("LabelDetailSerializer", "update"),
    }
    expected_label = await db(expected_state)(LabelDetailSerializer, label)
    assert label_client.state.tree() == expected_label

    # Removal from the reverse side; the label is no longer reachable in the job.
    await db(label.tasks.remove)(task)
    frame = await job_client.receive_records()
    assert {(type_name(r), r["_operation"]) for r in frame} == {
        ("TaskSerializer", "update"),
        ("LabelSerializer", "delete"),
    }
    await assert_converged(job_client, world.job, world.alice)
    await label_client.receive_records()
    assert label_client.state.tree() == await db(expected_state)(LabelDetailSerializer, label)

    # clear() says nothing about which rows it removed; the server remembers.
    await db(world.tasks[0].labels.clear)()
    await job_client.receive_records()
    await assert_converged(job_client, world.job, world.alice)
    await job_client.disconnect()
    await label_client.disconnect()


async def test_forward_foreign_key_brings_its_subtree(application, world):
    client = await connect(application, job_path(world.job), world.tokens["alice"])

    def outsider_develops():
        user, _ = make_user("dora")
        elsewhere = Project.objects.create(name="Elsewhere")
        participant = Participant.objects.create(project=elsewhere, user=user)
        task = world.tasks[1]
        task.developer = participant
        task.save()
        return participant

    participant = await db(outsider_develops)()
    frame = await client.receive_records()
    created = {(type_name(r), r["id"]) for r in frame if r["_operation"] == "create"}
    assert created == {
        ("ParticipantSerializer", participant.pk),
        ("UserSerializer", participant.user_id),
    }
    await assert_converged(client, world.job, world.alice)

    def unassign():
        task = Task.objects.get(pk=world.tasks[1].pk)
        task.developer = None
        task.save()

    await db(unassign)()
    frame = await client.receive_records()
    deleted = {(type_name(r), r["id"]) for r in frame if r["_operation"] == "delete"}
    assert deleted == {
        ("ParticipantSerializer", participant.pk),
        ("UserSerializer", participant.user_id),
    }
    await assert_converged(client, world.job, world.alice)
    await client.disconnect()


async def test_move_between_anchors(application, world):
    old = await connect(application, job_path(world.job), world.tokens["alice"])
    new = await connect(application, job_path(world.other_job), world.tokens["alice"])
    task = world.tasks[0]  # has a developer and a label

    def move():
        task.job = world.other_job
        task.save()

    await db(move)()
    old_frame = await old.receive_records()
    assert ("TaskSerializer", "delete") in {(type_name(r), r["_operation"]) for r in old_frame}
    assert not any(r["_operation"] == "create" for r in old_frame)
    await assert_converged(old, world.job, world.alice)

    new_frame = await new.receive_records()
    created = {type_name(r) for r in new_frame if r["_operation"] == "create"}
    assert {"TaskSerializer", "LabelSerializer"} <= created
    await assert_converged(new, world.other_job, world.alice)

    # The old anchor holds no copy any more: a later change only reaches the new one.
    def rename():
        moved = Task.objects.get(pk=task.pk)
        moved.title = "moved and renamed"
        moved.save()

    await db(rename)()
    frame = await new.receive_records()
    assert frame[0]["title"] == "moved and renamed"
    assert await old.nothing_more()
    await old.disconnect()
    await new.disconnect()


async def test_reverse_one_to_one_and_anchor_deletion(application, world):
    client = await connect(application, job_path(world.job), world.tokens["alice"])
    await db(lambda: JobSpec.objects.get(job=world.job).delete())()
    frame = await client.receive_records()
    assert {(type_name(r), r["_operation"]) for r in frame} == {
        ("JobSpecSerializer", "delete"),
        ("JobSerializer", "update"),
    }
    assert client.state.tree()["spec"] is None
    await db(JobSpec.objects.create)(job=world.job, text="again")
    await client.receive_records()
    await assert_converged(client, world.job, world.alice)

    await db(Job.objects.filter(pk=world.job.pk).delete)()
    frame = await client.receive_records()
    assert [(type_name(r), r["_operation"], r["id"]) for r in frame] == [
        ("JobSerializer", "delete", world.job.pk)
    ]
    assert await client.nothing_more()
    await client.disconnect()


async def test_related_property_relation_follows_changes(application, world):
    client = await connect(application, job_path(world.job), world.tokens["alice"])

    def join():
        user, _ = make_user("erin")
        return Participant.objects.create(project=world.project, user=user)

    participant = await db(join)()
    records = await records_until(client, lambda r: type_name(r) == "JobSerializer")
    assert ("ParticipantSerializer", participant.pk) in {
        (type_name(r), r["id"]) for r in records if r["_operation"] == "create"
    }
    await assert_converged(client, world.job, world.alice)
    await client.disconnect()


async def test_user_key_records_reach_only_their_owner(application, world):
    alice = await connect(application, job_path(world.job), world.tokens["alice"])
    bob = await connect(application, job_path(world.job), world.tokens["bob"])
    note = await db(Note.objects.create)(job=world.job, owner=world.alice, text="secret")

    alice_records = await records_until(alice, lambda r: type_name(r) == "NoteSerializer")
    assert any(r.get("text") == "secret" for r in alice_records)
    # Not even the job's list of note ids: bob's view of it did not change.
    assert await bob.nothing_more()

    def edit():
        note.text = "still secret"
        note.save()

    await db(edit)()
    assert (await alice.receive_records())[0]["text"] == "still secret"
    note_pk = note.pk
    await db(note.delete)()
    alice_records = await records_until(alice, lambda r: r["_operation"] == "delete")
    assert ("NoteSerializer", note_pk) in {(type_name(r), r["id"]) for r in alice_records}
    assert await bob.nothing_more()
    texts = [r.get("text") for r in bob.state.received]
    assert "secret" not in texts and "still secret" not in texts and "alice private" not in texts
    bob_note_ids = await db(
        lambda: set(Note.objects.filter(owner=world.bob).values_list("pk", flat=True))
    )()
    for record in bob.state.received:
        if type_name(record) == "JobSerializer" and "notes" in record:
            assert set(record["notes"]) <= bob_note_ids, "bob was told of another user's notes"
    await assert_converged(alice, world.job, world.alice)
    await assert_converged(bob, world.job, world.bob)
    await alice.disconnect()
    await bob.disconnect()


async def test_serializations_per_change_do_not_depend_on_clients(application, world):
    """Read from the library's own work counters (the ones ``make bench`` reports)."""

    async def cost_of_one_change(clients: int, title: str) -> int:
        connected = [
            await connect(application, job_path(world.job), world.tokens["alice"])
            for _ in range(clients)
        ]
        # On Redis the relay propagates what building the world logged: not this change.
        await until(lambda: not CapturedChange.objects.exists())
        before = _metrics.snapshot()["serialized"]

        def rename():
            task = Task.objects.get(pk=world.tasks[1].pk)
            task.title = title
            task.save()

        await db(rename)()
        for client in connected:
            assert (await client.receive_records())[0]["title"] == title
            await client.disconnect()
        return _metrics.snapshot()["serialized"] - before

    one = await cost_of_one_change(1, "seen by one")
    many = await cost_of_one_change(5, "seen by five")
    assert one == many == 1


async def test_change_to_label_name_reaches_both_channels(application, world):
    job_client = await connect(application, job_path(world.job), world.tokens["alice"])
    label = world.labels[0]
    label_client = await connect(
        application, f"/ws/label/{label.pk}/", world.tokens["alice"], channel=LabelChannel
    )

    def rename():
        fresh = Label.objects.get(pk=label.pk)
        fresh.name = "critical"
        fresh.save()

    await db(rename)()
    assert (await job_client.receive_records())[0]["name"] == "critical"
    assert (await label_client.receive_records())[0]["name"] == "critical"
    await job_client.disconnect()
    await label_client.disconnect()


async def test_renaming_reorders_lists_ordered_by_that_field(application, world):
    client = await connect(application, job_path(world.job), world.tokens["alice"])
    task = world.tasks[0]
    await db(task.labels.add)(world.labels[1])  # urgent, backend -> sorted: backend, urgent
    await client.receive_records()
    await assert_converged(client, world.job, world.alice)

    def rename():
        label = Label.objects.get(pk=world.labels[1].pk)
        label.name = "zzz last"
        label.save()

    await db(rename)()
    frame = await client.receive_records()
    task_update = next(r for r in frame if type_name(r) == "TaskSerializer")
    assert task_update["labels"] == [world.labels[0].pk, world.labels[1].pk]
    await assert_converged(client, world.job, world.alice)
    await client.disconnect()
