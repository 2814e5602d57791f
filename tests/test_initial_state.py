"""The whole nested state reaches an authenticated client once, as flat records."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from rxdjango._backends import get_backend
from rxdjango.testing import ChannelCommunicator

from jobs.channels import JobChannel, ProjectJobsChannel
from jobs.models import Job, Label, Participant, Task
from jobs.serializers import JobBriefSerializer, JobSerializer
from support import build_world, connect, expected_state, type_name

pytestmark = pytest.mark.django_db(transaction=True)


async def test_client_state_equals_serializer_output(application, world):
    client = await connect(application, f"/ws/job/{world.job.pk}/", world.tokens["alice"])
    expected = await database_sync_to_async(expected_state)(JobSerializer, world.job, world.alice)
    assert client.state.tree() == expected
    assert [n["text"] for n in client.state.tree()["notes"]] == ["alice private"]
    await client.disconnect()


async def test_start_sequence_order_and_record_shape(application, world):
    client = ChannelCommunicator(
        application, f"/ws/job/{world.job.pk}/", token=world.tokens["bob"], channel=JobChannel
    )
    assert await client.authenticate() == {"type": "auth", "statusCode": 200}
    assert await client.receive_frame() == {"type": "initialAnchors", "anchorIds": [world.job.pk]}
    records = []
    while True:
        frame = await client.receive_records()
        records.extend(frame)
        if frame[-1]["_operation"] == "end_initial_state":
            break
    marker = records.pop()
    assert marker["_instance_type"] == "" and marker["id"] == 0
    assert isinstance(marker["_tstamp"], float)
    assert all(r["_operation"] == "initial_state" for r in records)
    keys = [(r["_instance_type"], r["id"]) for r in records]
    assert len(keys) == len(set(keys)), "an instance was sent twice"
    by_type = {}
    for r in records:
        by_type.setdefault(type_name(r), []).append(r)
    # Alice's participant is reachable through project.participants, job.team and
    # task.developer, and is still sent once.
    assert len(by_type["ParticipantSerializer"]) == 2
    job = by_type["JobSerializer"][0]
    assert job["_instance_type"] == "jobs.serializers.JobSerializer"
    assert job["project"] == world.project.pk
    assert job["tasks"] == [t.pk for t in world.tasks]
    assert job["budget"] == "1234.50" and job["starts"] == "2026-01-02T03:04:05Z"
    # Only bob's note travels, and the job's list names only that one.
    assert [n["text"] for n in by_type["NoteSerializer"]] == ["bob private"]
    assert job["notes"] == [by_type["NoteSerializer"][0]["id"]]
    assert records[0] is job, "the anchor's own record comes first"
    asset = by_type["AssetSerializer"][0]
    assert isinstance(asset["id"], str) and len(asset["id"]) == 36
    assert job["asset_set"] == [asset["id"]]
    task0 = next(r for r in by_type["TaskSerializer"] if r["id"] == world.tasks[0].pk)
    alice_participant = next(
        p for p in by_type["ParticipantSerializer"] if p["user"] == world.alice.pk
    )
    assert task0["developer"] == alice_participant["id"]
    assert task0["labels"] == [world.labels[0].pk]
    assert task0["title_length"] == len("task 0")  # SerializerMethodField is a plain value
    assert all(isinstance(r["_tstamp"], float) for r in records)
    await client.disconnect()


async def test_list_channel_sends_each_anchor_then_its_end_marker(application, world):
    client = ChannelCommunicator(
        application,
        f"/ws/project/{world.project.pk}/jobs/",
        token=world.tokens["alice"],
        channel=ProjectJobsChannel,
    )
    assert (await client.authenticate())["statusCode"] == 200
    state = await client.initial_state()
    assert state.anchors == [world.job.pk, world.other_job.pk]
    assert state.end_markers == 2

    def expected():
        jobs = Job.objects.filter(project=world.project).order_by("id")
        return [expected_state(JobBriefSerializer, job) for job in jobs]

    assert state.tree() == await database_sync_to_async(expected)()
    await client.disconnect()


def _cold_load_queries(task_count: int) -> tuple[int, int]:
    """Queries of a cold load, and the jobs of the loaded job's project."""
    world = build_world(task_count)
    jobs_in_project = Job.objects.filter(project=world.job.project).count()
    participant = Participant.objects.filter(user=world.bob).get()
    for index, task in enumerate(world.tasks):
        task.developer = participant if index % 2 else task.developer
        task.save()
        task.labels.add(*Label.objects.all())
    backend = get_backend()
    with CaptureQueriesContext(connection) as cold:
        snapshot = backend.snapshot(JobChannel, world.job.pk)
    tasks = [r for r in snapshot.records() if r.key[0].endswith("TaskSerializer")]
    assert len(tasks) == task_count
    with CaptureQueriesContext(connection) as hot:
        backend.snapshot(JobChannel, world.job.pk)
    assert len(hot.captured_queries) == 0, "a hot anchor must come from the cache"
    Job.objects.all().delete()
    Task.objects.all().delete()
    from django.contrib.auth import get_user_model

    get_user_model().objects.all().delete()
    Label.objects.all().delete()
    # The load reads one snapshot: its BEGIN and COMMIT are not reads of the tree.
    reads = [q for q in cold.captured_queries if q["sql"].split()[0] not in ("BEGIN", "COMMIT")]
    return len(reads), jobs_in_project


def test_cold_load_query_count_does_not_grow_with_tasks():
    small, jobs = _cold_load_queries(10)
    large, _ = _cold_load_queries(100)
    assert small == large, (small, large)
    # One query per layer, per list of child ids, per prefetch a layer plans. A related
    # property runs its body once per parent row: for its list, the loaded job's (and
    # one query for the job); for the parents of the rows it reaches, each job its
    # lookup finds (the project's), after one query for the candidates and one for them.
    state_model = JobChannel.state_model()
    bound = sum(
        1
        + len(layer.prefetch_related)
        + sum(
            1 if e.kind.value != "property" else 2 for e in layer.edges if e.kind.value != "forward"
        )
        + sum(2 + jobs for e in layer.incoming if e.kind.value == "property")
        for layer in state_model.layers.values()
    )
    assert large <= bound, (large, bound)


@override_settings(RX_FRAME_SIZE=600)
async def test_large_initial_state_is_chunked(application, world):
    client = ChannelCommunicator(
        application, f"/ws/job/{world.job.pk}/", token=world.tokens["alice"], channel=JobChannel
    )
    await client.authenticate()
    await client.receive_frame()  # initialAnchors
    sizes = []
    while client.state.end_markers == 0:
        message = await client.receive_output(1)
        sizes.append(len(message["text"]))
        client.state.apply(json.loads(message["text"]))
    assert len(sizes) > 3
    assert max(sizes[:-1]) <= 600
    await client.disconnect()
