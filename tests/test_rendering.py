"""Who may see which record, and what each viewer receives: pure, from plain records.

The job tree of the test project: a job lists tasks and private notes (``user_key``);
a note lists its comments, a comment its reactions, private to the note's owner too.
"""

from __future__ import annotations

from typing import Any

import orjson

from rxdjango._audience import assign_all, assign_changed, restrict, union
from rxdjango._change import FlatRecord
from rxdjango._propagation import Change
from rxdjango._render import Item, render_delta, render_initial, render_since, visible_data

from jobs.channels import JobChannel
from support import JOB, NOTE, NOTE_COMMENT, NOTE_REACTION, TASK, flat_record

STATE = JobChannel.state_model()
ALICE, BOB, CAROL = 1, 2, 3


record = flat_record


def anchor(**notes_of: int) -> dict:
    """A job with one task, and per user ``notes_of[user]`` notes, each with a comment
    and a reaction under it; note ids from 10, comments from 100, reactions from 1000."""
    records = [record(TASK, 5, title="t")]
    note_ids = []
    for index, (user, count) in enumerate(notes_of.items()):
        owner = {"alice": ALICE, "bob": BOB}[user]
        for n in range(count):
            pk = 10 + index * 10 + n
            note_ids.append(pk)
            records.append(record(NOTE, pk, owner, text=f"{user}", comments=[pk * 10]))
            records.append(record(NOTE_COMMENT, pk * 10, text="c", reactions=[pk * 100]))
            records.append(record(NOTE_REACTION, pk * 100, emoji="e"))
    records.insert(0, record(JOB, 1, title="job", tasks=[5], notes=note_ids))
    return assign_all({r.key: r for r in records}, (JOB, 1), STATE)


def test_audiences_combine_as_documented():
    assert union(None, frozenset({1})) is None
    assert union(frozenset({1}), frozenset({2})) == {1, 2}
    assert restrict(None, 1) == {1}
    assert restrict(frozenset({1, 2}), 2) == {2}
    assert restrict(frozenset({1}), 2) == frozenset()  # private to 2 below 1's: nobody
    assert restrict(frozenset({1}), None) == {1}


def test_privacy_is_inherited_at_every_depth():
    records = anchor(alice=1, bob=1)
    assert records[(JOB, 1)].audience is None
    assert records[(TASK, 5)].audience is None
    for pk, user in ((10, ALICE), (20, BOB)):
        assert records[(NOTE, pk)].audience == {user}
        assert records[(NOTE_COMMENT, pk * 10)].audience == {user}
        assert records[(NOTE_REACTION, pk * 100)].audience == {user}
    assert records[(JOB, 1)].private_children == {(NOTE, 10): {ALICE}, (NOTE, 20): {BOB}}


def test_a_record_below_two_owners_is_seen_by_both_and_one_public_path_makes_it_public():
    comment = record(NOTE_COMMENT, 7, text="shared", reactions=[])
    notes = [
        record(NOTE, 10, ALICE, comments=[7]),
        record(NOTE, 20, BOB, comments=[7]),
    ]
    job = record(JOB, 1, notes=[10, 20], tasks=[])
    records = assign_all({r.key: r for r in (job, comment, *notes)}, (JOB, 1), STATE)
    assert records[(NOTE_COMMENT, 7)].audience == {ALICE, BOB}


def test_initial_state_names_only_what_each_viewer_receives():
    records = anchor(alice=2, bob=1)
    for viewer, own in ((ALICE, [10, 11]), (BOB, [20]), (CAROL, []), (None, [])):
        sent = [orjson.loads(b) for b in render_initial(records.values(), STATE, viewer)]
        keys = {(r["_instance_type"], r["id"]) for r in sent}
        job = next(r for r in sent if r["_instance_type"] == JOB)
        assert job["notes"] == own
        assert {k for k in keys if k[0] == NOTE} == {(NOTE, pk) for pk in own}
        assert {k for k in keys if k[0] == NOTE_REACTION} == {
            (NOTE_REACTION, pk * 100) for pk in own
        }


def test_a_state_without_private_records_renders_once_for_everyone():
    records = anchor()
    before = records[(TASK, 5)]
    after = FlatRecord(before.key, {**before.data, "title": "u"}, tstamp=2.0)
    frames, recipients = render_delta([Item(before, after)], STATE, 2.0)
    assert [target for target, _ in frames] == [(None, frozenset())]
    assert recipients == [((TASK, 5), None)]


def test_a_private_create_reaches_its_owner_and_tells_nobody_else_anything():
    records = anchor(alice=1, bob=1)
    graph = Graph(records)
    job = records[(JOB, 1)]
    graph.put(record(NOTE, 11, ALICE, text="new", comments=[]))
    graph.put(
        FlatRecord(
            job.key,
            {**job.data, "notes": [10, 11, 20]},
            refs=[*job.refs, (NOTE, 11)],
            audience=job.audience,
            private_children=job.private_children,
        )
    )
    previous = assign_changed(graph, [(JOB, 1), (NOTE, 11)], STATE)
    items = [Item(None, graph.get((NOTE, 11))), Item(job, graph.get((JOB, 1)))]
    items += [Item(b, graph.get(k)) for k, b in previous.items() if k not in ((NOTE, 11), (JOB, 1))]
    frames, recipients = render_delta(items, STATE, 3.0)
    by_target = {target: orjson.loads(frame) for target, frame in frames}
    assert set(by_target) == {(frozenset({ALICE}), frozenset())}, "only alice hears of it"
    alice = by_target[(frozenset({ALICE}), frozenset())]
    assert {(r["_instance_type"], r["_operation"]) for r in alice} == {
        (NOTE, "create"),
        (JOB, "update"),
    }
    assert next(r for r in alice if r["_instance_type"] == JOB)["notes"] == [10, 11]
    assert dict(recipients) == {(NOTE, 11): {ALICE}, (JOB, 1): {ALICE}}


def test_a_note_given_to_another_user_moves_its_whole_subtree():
    records = anchor(alice=1)
    graph = Graph(records)
    note = records[(NOTE, 10)]
    graph.put(
        FlatRecord(
            note.key,
            note.data,
            owner=BOB,
            refs=note.refs,
            audience=note.audience,
            private_children=note.private_children,
        )
    )
    previous = assign_changed(graph, [(NOTE, 10)], STATE)
    items = [Item(before, graph.get(key)) for key, before in previous.items()]
    assert (NOTE, 10) in previous, "its audience changed"
    frames, _ = render_delta(items, STATE, 4.0)
    by_target = {target: orjson.loads(frame) for target, frame in frames}
    alice = by_target[(frozenset({ALICE}), frozenset())]
    bob = by_target[(frozenset({BOB}), frozenset())]
    assert {(r["_instance_type"], r["_operation"]) for r in alice} == {
        (NOTE, "delete"),
        (NOTE_COMMENT, "delete"),
        (NOTE_REACTION, "delete"),
        (JOB, "update"),
    }
    assert {(r["_instance_type"], r["_operation"]) for r in bob} == {
        (NOTE, "create"),
        (NOTE_COMMENT, "create"),
        (NOTE_REACTION, "create"),
        (JOB, "update"),
    }
    assert next(r for r in bob if r["_instance_type"] == JOB)["notes"] == [10]
    assert next(r for r in alice if r["_instance_type"] == JOB)["notes"] == []


def test_a_catch_up_sends_what_the_viewer_was_sent_and_only_that():
    records = anchor(alice=1, bob=1)
    changes = [
        Change(5.0, (NOTE_COMMENT, 100), False, frozenset({ALICE})),
        Change(6.0, (TASK, 5), False, None),
        Change(7.0, (NOTE, 30), True, frozenset({ALICE})),
    ]
    for viewer, expected in (
        (ALICE, {(NOTE_COMMENT, 100, "create"), (TASK, 5, "create"), (NOTE, 30, "delete")}),
        (BOB, {(TASK, 5, "create")}),
    ):
        sent = [orjson.loads(b) for b in render_since(changes, records, STATE, viewer)]
        assert {(r["_instance_type"], r["id"], r["_operation"]) for r in sent} == expected


def test_a_reference_to_a_missing_child_in_a_private_list_shows_nothing():
    job = record(JOB, 1, notes=[10, 99], tasks=[])
    note = record(NOTE, 10, ALICE, comments=[])
    records = assign_all({job.key: job, note.key: note}, (JOB, 1), STATE)
    assert visible_data(records[(JOB, 1)], STATE, ALICE)["notes"] == [10]


class Graph:
    """An anchor in a dict, as the propagator's views offer it."""

    def __init__(self, records: dict) -> None:
        self.records = dict(records)
        self.root = (JOB, 1)

    def prefetch(self, keys: Any) -> None:
        pass

    def get(self, key: Any) -> FlatRecord | None:
        return self.records.get(key)

    def referrers_of(self, key: Any) -> set:
        return {k for k, r in self.records.items() if key in r.refs}

    def put(self, record: FlatRecord) -> FlatRecord | None:
        previous = self.records.get(record.key)
        self.records[record.key] = record
        return previous
