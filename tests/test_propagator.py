"""The propagator on its own: cached records and fresh rows in, deltas and frames out.

No database: the rows come from a table (a ``RecordSource``), the anchors live in the
embedded backend's memory store, and the frames are collected as published. Each case
gives what the anchor holds, what the rows are now, which rows a transaction touched,
and what each viewer must receive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from rxdjango._audience import assign_all
from rxdjango._backends.memory_cache import AnchorStatus, MemoryCache, MemoryStore
from rxdjango._change import AnchorRef, FlatRecord, Retained
from rxdjango._hub import Target
from rxdjango._propagation import Propagator
from rxdjango._state_model import Key, Layer

from jobs.channels import JobChannel
from support import JOB, LABEL, NOTE, TASK, flat_record

STATE = JobChannel.state_model()
CHANNEL = JobChannel.channel_id
ALICE, BOB = 1, 2


row = flat_record


class TableSource:
    """Rows by key; counts what the propagator asks for (one serialization per row)."""

    def __init__(self, rows: Iterable[FlatRecord]) -> None:
        self.rows = {r.key: r for r in rows}
        self.fetched: list[Key] = []

    def fetch_layer(self, layer: Layer, pks: Iterable[Any], tstamp: float) -> dict:
        found = {}
        for pk in pks:
            record = self.rows.get((layer.instance_type, pk))
            if record is not None:
                self.fetched.append(record.key)
                found[pk] = FlatRecord(
                    record.key,
                    dict(record.data),
                    owner=record.owner,
                    refs=list(record.refs),
                    tstamp=tstamp,
                    parent_links=record.parent_links,
                )
        return found

    def parent_links(self, layer: Layer, pks: Iterable[Any]) -> dict:
        return {
            pk: self.rows[(layer.instance_type, pk)].parent_links
            for pk in pks
            if (layer.instance_type, pk) in self.rows
        }


@dataclass
class Frames:
    """Frames as the hub would deliver them: (records, only these users, except these)."""

    sent: list[tuple[list[dict], frozenset | None, frozenset]] = field(default_factory=list)

    def publish(
        self,
        topic: AnchorRef,
        frame: str,
        target: Target | None = None,
        retained: Retained | None = None,
    ) -> int:
        only, exclude = target if target is not None else (None, frozenset())
        self.sent.append((orjson.loads(frame), only, exclude))
        return 1

    def anchor_gone(self, topic: AnchorRef) -> None:
        self.sent.append(([{"gone": topic[1]}], None, frozenset()))

    def seen_by(self, user: Any) -> list[dict]:
        """Every record ``user`` receives, metadata stripped to the operation."""
        seen = []
        for records, only, exclude in self.sent:
            if (only is None or user in only) and user not in exclude:
                for record in records:
                    kept = {k: v for k, v in record.items() if k not in ("_tstamp", "_deleted")}
                    seen.append(kept)
        return seen


def hot_anchor(cache: MemoryCache, records: list[FlatRecord], pk: Any = 1) -> AnchorRef:
    ref = (CHANNEL, pk)
    anchor = cache.begin_heating(ref, (JOB, pk), 60)
    cache.put_many(anchor, assign_all({r.key: r for r in records}, (JOB, pk), STATE).values())
    anchor.status = AnchorStatus.HOT
    return ref


HELD = [
    row(JOB, 1, title="job", tasks=[5, 6], notes=[]),
    row(TASK, 5, parents=[(JOB, 1)], title="five", done=False),
    row(TASK, 6, parents=[(JOB, 1)], title="six", done=False),
]


def rows(*changed: FlatRecord, without: Iterable[Key] = ()) -> list[FlatRecord]:
    """The held rows with ``changed`` replacing (or added to) them, ``without`` deleted."""
    table = {r.key: r for r in HELD}
    table.update({r.key: r for r in changed})
    for key in without:
        table.pop(key, None)
    return list(table.values())


def upd(kind: str, pk: Any, **fields: Any) -> dict:
    return {"id": pk, "_instance_type": kind, "_operation": "update", **fields}


CASES = [
    pytest.param(
        rows(row(TASK, 5, parents=[(JOB, 1)], title="renamed", done=False)),
        {TASK: {5}},
        {None: [upd(TASK, 5, title="renamed")]},
        1,
        id="an update sends only the changed field",
    ),
    pytest.param(
        rows(),
        {TASK: {5}},
        {None: []},
        1,
        id="a row saved unchanged sends nothing",
    ),
    pytest.param(
        rows(row(JOB, 1, title="job", tasks=[6], notes=[]), without=[(TASK, 5)]),
        {TASK: {5}},
        {None: [upd(JOB, 1, tasks=[6]), {"id": 5, "_instance_type": TASK, "_operation": "delete"}]},
        1,
        id="a delete refreshes the parent's list, then deletes",
    ),
    pytest.param(
        rows(
            row(JOB, 1, title="job", tasks=[5, 6, 7], notes=[]),
            row(TASK, 7, parents=[(JOB, 1)], title="seven", done=False),
        ),
        {TASK: {7}},
        {
            None: [
                {
                    "id": 7,
                    "_instance_type": TASK,
                    "_operation": "create",
                    "title": "seven",
                    "done": False,
                },
                upd(JOB, 1, tasks=[5, 6, 7]),
            ]
        },
        2,
        id="a create found through its parent link brings the record and the new list",
    ),
    pytest.param(
        rows(
            row(JOB, 1, title="job", tasks=[5, 6], notes=[30]),
            row(NOTE, 30, owner=ALICE, parents=[(JOB, 1)], text="mine", comments=[]),
        ),
        {NOTE: {30}},
        {
            ALICE: [
                {
                    "id": 30,
                    "_instance_type": NOTE,
                    "_operation": "create",
                    "text": "mine",
                    "comments": [],
                },
                upd(JOB, 1, notes=[30]),
            ],
            BOB: [],
        },
        2,
        id="a private create reaches its owner and tells nobody else anything",
    ),
]


@pytest.mark.parametrize(("fresh", "touched", "expected", "serialized"), CASES)
def test_a_change_becomes_the_frames_each_viewer_must_receive(fresh, touched, expected, serialized):
    cache, frames = MemoryCache(), Frames()
    store = MemoryStore(cache, frames)
    hot_anchor(cache, HELD)
    source = TableSource(fresh)
    Propagator(STATE, CHANNEL, store, source).apply(touched, 2.0)
    for viewer, records in expected.items():
        got = frames.seen_by(viewer)
        assert sorted(got, key=repr) == sorted(records, key=repr), viewer
    assert len(source.fetched) == serialized


def test_a_row_held_by_many_anchors_is_read_once_and_each_anchor_hears_of_it():
    """A label shared by the tasks of three jobs is renamed."""
    cache, frames = MemoryCache(), Frames()
    store = MemoryStore(cache, frames)
    for pk in (1, 2, 3):
        hot_anchor(
            cache,
            [
                row(JOB, pk, title="job", tasks=[pk * 10], notes=[]),
                row(TASK, pk * 10, parents=[(JOB, pk)], title="t", labels=[9]),
                row(LABEL, 9, name="urgent"),
            ],
            pk,
        )
    tasks = [row(TASK, pk * 10, parents=[(JOB, pk)], title="t", labels=[9]) for pk in (1, 2, 3)]
    source = TableSource([row(LABEL, 9, name="later"), *tasks])
    Propagator(STATE, CHANNEL, store, source).apply({LABEL: {9}}, 2.0)
    # Labels are listed in name order, so the tasks listing it are read again too.
    assert sorted(source.fetched) == sorted({(LABEL, 9), *(t.key for t in tasks)})
    assert len(source.fetched) == len(set(source.fetched)), "each row read once"
    assert [records for records, _, _ in frames.sent] == [
        [{**upd(LABEL, 9, name="later"), "_tstamp": 2.0}]
    ] * 3


def test_the_anchor_holds_the_fresh_rows_afterwards():
    cache, frames = MemoryCache(), Frames()
    store = MemoryStore(cache, frames)
    ref = hot_anchor(cache, HELD)
    fresh = rows(row(JOB, 1, title="job", tasks=[6], notes=[]), without=[(TASK, 5)])
    Propagator(STATE, CHANNEL, store, TableSource(fresh)).apply({TASK: {5}}, 2.0)
    anchor = cache.get(ref)
    assert anchor is not None
    assert set(anchor.records) == {(JOB, 1), (TASK, 6)}
    assert anchor.records[(JOB, 1)].data["tasks"] == [6]
    assert anchor.records[(JOB, 1)].tstamp == 2.0
