"""Private records stay private at every depth, in every frame, for every way in.

A note (``user_key = "owner"``) has comments, and comments have reactions: all of it is
its owner's alone. Over real sockets, on the embedded backend and on Redis (two server
processes): at connect, live, on catch-up, through a move between jobs and a change of
owner, no frame bob receives holds one of alice's private records or names one in a
list of ids; bob cannot write to them, and the answer does not tell him they exist.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from channels.db import database_sync_to_async as db

from jobs.models import Job, Note, NoteComment, NoteReaction
from jobs.serializers import JobSerializer
from support import (
    NOTE,
    NOTE_COMMENT,
    NOTE_REACTION,
    PRIVATE_TYPES,
    SocketClient,
    World,
    deployment,
    expected_state,
)

# The servers of these tests run on the backend each test chooses.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.own_backend]

BACKENDS = ["embedded", "redis"]
LISTS = {
    ("jobs.serializers.JobSerializer", "notes"): NOTE,
    (NOTE, "comments"): NOTE_COMMENT,
    (NOTE_COMMENT, "reactions"): NOTE_REACTION,
}


def private_ids(owner_pk: Any) -> dict[str, set[Any]]:
    """The ids of every private record of ``owner_pk``, by instance type."""
    notes = set(Note.objects.filter(owner_id=owner_pk).values_list("pk", flat=True))
    comments = set(NoteComment.objects.filter(note__in=notes).values_list("pk", flat=True))
    reactions = set(NoteReaction.objects.filter(comment__in=comments).values_list("pk", flat=True))
    return {NOTE: notes, NOTE_COMMENT: comments, NOTE_REACTION: reactions}


def leaks(received: list[dict], foreign: dict[str, set[Any]]) -> list[Any]:
    """What in ``received`` holds or names one of the ``foreign`` private records."""
    found = []
    for record in received:
        kind = record.get("_instance_type")
        if kind in foreign and record.get("id") in foreign[kind]:
            found.append(record)
        for (holder, name), child in LISTS.items():
            if kind == holder and name in record:
                value = record[name]
                named = set(value) if isinstance(value, list) else {value}
                if named & foreign[child]:
                    found.append((kind, record["id"], name, named & foreign[child]))
    return found


async def converged(client: SocketClient, job: Job, user: Any) -> None:
    want = await db(lambda: expected_state(JobSerializer, Job.objects.get(pk=job.pk), user))()
    while client.state.tree() != want or client.state.dangling():
        await client.read()


async def check_nothing_leaked(bob: SocketClient, world: World) -> None:
    alice_ids = await db(private_ids)(world.alice.pk)
    assert not leaks(bob.state.received, alice_ids), leaks(bob.state.received, alice_ids)


def _alice_writes_below_her_note(world: World) -> tuple[int, int]:
    note = Note.objects.get(owner=world.alice, job=world.job)
    comment = NoteComment.objects.create(note=note, text="alice's second thought")
    reaction = NoteReaction.objects.create(comment=comment, emoji="thumbs up")
    reaction.emoji = "heart"
    reaction.save()
    NoteReaction.objects.filter(comment__note=note).exclude(pk=reaction.pk).delete()
    return comment.pk, reaction.pk


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_private_subtree_reaches_only_its_owner(world, shared_redis, backend):
    with deployment(backend, shared_redis) as urls:
        path = f"/ws/job/{world.job.pk}/"
        alice = SocketClient(f"{urls[0]}{path}", world.tokens["alice"])
        bob = SocketClient(f"{urls[-1]}{path}", world.tokens["bob"])
        await alice.open()
        await bob.open()
        await check_nothing_leaked(bob, world)  # at connect

        comment_pk, reaction_pk = await db(_alice_writes_below_her_note)(world)
        await alice.records_until(lambda r: r.get("emoji") == "heart")
        await converged(alice, world.job, world.alice)
        assert await bob.quiet(), "bob heard of alice's private changes"

        # Catch-up: bob away while alice adds to her note (he reconnects with lastUpdate).
        note_pk = await db(lambda: Note.objects.get(owner=world.alice, job=world.job).pk)()
        await bob.close()
        await db(NoteComment.objects.create)(note_id=note_pk, text="while bob was away")
        await alice.records_until(lambda r: r.get("text") == "while bob was away")
        received = len(bob.state.received)
        await bob.open()
        assert not [
            r for r in bob.state.received[received:] if r["_operation"] != "end_initial_state"
        ]
        await converged(bob, world.job, world.bob)
        await check_nothing_leaked(bob, world)
        for client in (alice, bob):
            await client.close()
        assert comment_pk and reaction_pk


@pytest.mark.parametrize("backend", BACKENDS)
async def test_moves_and_a_change_of_owner_move_the_whole_subtree(world, shared_redis, backend):
    with deployment(backend, shared_redis) as urls:

        def url(index: int, job: Job) -> str:
            return f"{urls[index % len(urls)]}/ws/job/{job.pk}/"

        clients = {
            ("alice", "job"): SocketClient(url(0, world.job), world.tokens["alice"]),
            ("bob", "job"): SocketClient(url(1, world.job), world.tokens["bob"]),
            ("alice", "other"): SocketClient(url(1, world.other_job), world.tokens["alice"]),
            ("bob", "other"): SocketClient(url(0, world.other_job), world.tokens["bob"]),
        }
        for client in clients.values():
            await client.open()

        def move_alices_note() -> None:
            note = Note.objects.get(owner=world.alice)
            note.job = world.other_job
            note.save()

        await db(move_alices_note)()
        await clients["alice", "other"].records_until(
            lambda r: r.get("_instance_type") == NOTE_REACTION
        )

        def give_it_to_bob() -> None:
            note = Note.objects.get(owner=world.alice)
            note.owner = world.bob
            note.save()

        await db(give_it_to_bob)()
        await clients["bob", "other"].records_until(
            lambda r: r.get("_instance_type") == NOTE_REACTION
        )
        for (user, where), client in clients.items():
            job = world.job if where == "job" else world.other_job
            await converged(client, job, getattr(world, user))
        # Bob never received alice's note while it was hers, nor alice's after.
        first_note = await db(lambda: Note.objects.filter(job=world.other_job).get().pk)()
        assert not [
            r
            for r in clients["bob", "job"].state.received
            if r.get("_instance_type") in PRIVATE_TYPES and r.get("id") == first_note
        ]
        for client in clients.values():
            await client.close()


async def write(client: SocketClient, frame: dict) -> dict:
    await client.ws.send(orjson.dumps(frame).decode())
    while True:
        reply = await client.read()
        if isinstance(reply, dict) and reply.get("type") == "writeResponse":
            return reply


@pytest.mark.parametrize("backend", BACKENDS)
async def test_another_users_private_records_cannot_be_written_or_probed(
    world, shared_redis, backend
):
    with deployment(backend, shared_redis) as urls:
        bob = SocketClient(f"{urls[-1]}/ws/job/{world.job.pk}/", world.tokens["bob"])
        await bob.open()
        alice_ids = await db(private_ids)(world.alice.pk)
        (comment,) = alice_ids[NOTE_COMMENT]
        (reaction,) = alice_ids[NOTE_REACTION]
        missing = 10**9

        async def save(kind: str, pk: Any) -> dict:
            return await write(
                bob,
                {
                    "type": "write",
                    "writeId": 1,
                    "operation": "save",
                    "instanceType": kind,
                    "instanceId": pk,
                    "data": {"text": "bob was here", "emoji": "x"},
                },
            )

        async def create_under(kind: str, parent_kind: str, pk: Any, relation: str) -> dict:
            return await write(
                bob,
                {
                    "type": "write",
                    "writeId": 2,
                    "operation": "create",
                    "instanceType": kind,
                    "parentType": parent_kind,
                    "parentId": pk,
                    "relationName": relation,
                    "data": {"text": "bob was here", "emoji": "x"},
                },
            )

        for kind, pk in ((NOTE_COMMENT, comment), (NOTE_REACTION, reaction)):
            foreign, absent = await save(kind, pk), await save(kind, missing)
            assert foreign["error"] == {
                "code": 400,
                "message": f"{kind} {pk} is not in this context",
            }
            assert absent["error"] == {
                "code": 400,
                "message": f"{kind} {missing} is not in this context",
            }
        foreign = await create_under(NOTE_REACTION, NOTE_COMMENT, comment, "reactions")
        absent = await create_under(NOTE_REACTION, NOTE_COMMENT, missing, "reactions")
        assert foreign["error"]["message"].replace(str(comment), "ID") == absent["error"][
            "message"
        ].replace(str(missing), "ID")
        rows = await db(
            lambda: (NoteComment.objects.get(pk=comment).text, NoteReaction.objects.count())
        )()
        assert rows == ("alice comment", 2), "nothing changed"
        await check_nothing_leaked(bob, world)
        await bob.close()


def test_a_writes_locked_row_gives_its_own_owner_and_parent_links(world: World):
    """A write checks who may see the row it locked: that row's owner and its links to
    parents are read from it, not queried again; the audience is the same."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rxdjango._membership import audience_in
    from rxdjango._state_model import pk_repr

    from jobs.channels import JobChannel

    note = Note.objects.create(job=world.job, owner=world.alice, text="mine")
    comment = NoteComment.objects.create(note=note, text="under it")
    state_model = JobChannel.state_model()
    anchors, elsewhere = [pk_repr(world.job.pk)], [pk_repr(world.other_job.pk)]
    for kind, row, table in (
        (NOTE, note, '"jobs_note"'),
        (NOTE_COMMENT, comment, '"jobs_notecomment"'),
    ):
        layer = state_model.layers[kind]
        read = audience_in(state_model, layer, row.pk, anchors)
        with CaptureQueriesContext(connection) as queries:
            held = audience_in(state_model, layer, row.pk, anchors, row)
            assert audience_in(state_model, layer, row.pk, elsewhere, row) == frozenset()
        assert held == read == frozenset({pk_repr(world.alice.pk)})
        assert not [q["sql"] for q in queries.captured_queries if table in q["sql"]]
