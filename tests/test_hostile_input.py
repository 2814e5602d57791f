"""Hostile input: a corpus of bad frames through a real server, and a fuzz run over
the frame handler.

Every case gets its documented reply or close code (docs/protocol.md,
docs/writes.md), the server keeps serving other clients, the database does not
change, no internal detail (traceback, exception name) reaches a client, and a
``user_key`` record never reaches another user: one witness checks every frame any
client of this module receives.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import itertools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import websockets
from channels.db import database_sync_to_async as db
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core import serializers as django_serializers
from django.test.utils import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from rxdjango.testing import ChannelCommunicator, ClientState, ConnectionClosed, timeout

from jobs.channels import JobChannel
from jobs.models import Asset, Deadline, Job, JobSpec, Note, Participant, Project, Task
from jobs.serializers import JobSerializer
from support import (
    ASSET,
    JOB,
    LABEL,
    NOTE,
    NOTE_COMMENT,
    NOTE_REACTION,
    PRIVATE_TYPES,
    TASK,
    World,
    expected_state,
    make_user,
    running_server,
)

pytestmark = pytest.mark.django_db(transaction=True)

PARTICIPANT = "jobs.serializers.ParticipantSerializer"
USER = "jobs.serializers.UserSerializer"
PROJECT = "jobs.serializers.ProjectSerializer"
DEADLINE = "jobs.serializers.DeadlineSerializer"
SPEC = "jobs.serializers.JobSpecSerializer"

LIMIT = 1024 * 1024  # RX_MAX_MESSAGE_SIZE (the default)
RATE = 40  # RX_RATE_LIMIT of the corpus server
PROBE = 424242  # callId of the probe that shows a connection is still served
# Frames the fuzz runs try (``make soak`` runs more).
FUZZ_EXAMPLES = int(os.environ.get("RX_FUZZ_EXAMPLES", "200"))

AUTH_OK = {"type": "auth", "statusCode": 200}
AUTH_ERRORS = {
    400: "error/missing-token",
    401: "error/unauthorized",
    403: "error/forbidden",
    404: "error/not-found",
    408: "error/auth-timeout",
}
REPLIES = {"auth", "error", "actionResponse", "writeResponse"}
CONTROLS = REPLIES | {
    "initialAnchors",
    "prependAnchor",
    "appendAnchor",
    "resync",
    "runtimeVar",
    "system",
    "maintenance",
}
OPERATIONS = {"initial_state", "create", "update", "delete", "end_initial_state"}
ERROR_MESSAGES = {
    "frame is not valid JSON",
    "frame too large",
    "unknown message",
    "already authenticated",
    "an action call needs an integer callId",
    "a write needs a writeId",
    "too many frames",
}


# -- the witness: every frame any client receives ------------------------------------------

_EXCEPTION_NAMES = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
} | {
    "ObjectDoesNotExist",
    "DoesNotExist",
    "MultipleObjectsReturned",
    "DatabaseError",
    "DataError",
    "IntegrityError",
    "InterfaceError",
    "OperationalError",
    "ProgrammingError",
    "ValidationError",
    "FieldError",
    "ImproperlyConfigured",
    "SynchronousOnlyOperation",
    "JSONDecodeError",
    "JSONEncodeError",
    "ParamError",
    "WriteRefused",
    "AuthFailure",
    "ActionError",
    "ChannelDeclarationError",
    "StopConsumer",
    "RedisError",
}
INTERNALS = re.compile(
    r'Traceback|File "|\b(?:' + "|".join(sorted(map(re.escape, _EXCEPTION_NAMES))) + r")\b"
)


def assert_no_internals(text: str) -> None:
    found = INTERNALS.search(text)
    assert found is None, f"{found.group()!r} reached a client: {text[:300]}"


def check_control(frame: dict) -> None:
    """A control message has one of the documented shapes."""
    kind = frame.get("type")
    assert kind in CONTROLS, f"undocumented message {frame!r}"
    if kind == "error":
        assert set(frame) == {"type", "error"}, frame
        assert set(frame["error"]) == {"code", "message"}, frame
        assert frame["error"]["message"] in ERROR_MESSAGES, frame
        assert frame["error"]["code"] == (429 if "many" in frame["error"]["message"] else 400)
    elif kind == "auth":
        assert frame == AUTH_OK or frame == auth_refused(frame.get("statusCode")), frame
    elif kind == "actionResponse":
        assert set(frame) in ({"type", "callId", "result"}, {"type", "callId", "error"}), frame
        assert isinstance(frame["callId"], int), frame
        if "error" in frame:
            assert set(frame["error"]) == {"code", "message"}, frame
            assert frame["error"]["code"] in (400, 403), frame
    elif kind == "writeResponse":
        assert set(frame) <= {"type", "writeId", "success", "error", "instanceId"}, frame
        assert isinstance(frame["writeId"], int | str) and frame["success"] in (True, False)
        if not frame["success"]:
            assert {"code", "message"} <= set(frame["error"]) <= {"code", "message", "detail"}
            assert frame["error"]["code"] in (400, 403), frame


class Witness:
    """Checks every frame a client receives; knows the owner of every private record
    (a note, and the comments and reactions below it) and of every id in a list."""

    def __init__(self) -> None:
        state_model = JobChannel.state_model()
        private = {
            layer.instance_type for layer in state_model.layers.values() if layer.user_key_attname
        }
        assert private == {NOTE}, "the checks below know only the notes as private records"
        below = {t for t, layer in state_model.layers.items() if layer.may_be_private}
        assert below == set(PRIVATE_TYPES), "the checks below know the notes' subtree"
        #: private instance type -> pk -> owner
        self.owners: dict[str, dict[Any, Any]] = {t: {} for t in PRIVATE_TYPES}
        #: list fields naming private records: (holder type, field) -> private type
        self.lists = {
            (layer.instance_type, edge.name): edge.child.instance_type
            for layer in state_model.layers.values()
            for edge in layer.private_edges
        }
        self.frames = 0
        self.records = 0

    def learn(self, rows: dict) -> None:
        """Owners of the private records in a database snapshot."""
        notes = {pk: f["owner"] for (m, pk), f in rows.items() if m == "jobs.note"}
        comments = {
            pk: notes.get(f["note"]) for (m, pk), f in rows.items() if m == "jobs.notecomment"
        }
        reactions = {
            pk: comments.get(f["comment"])
            for (m, pk), f in rows.items()
            if m == "jobs.notereaction"
        }
        for kind, found in ((NOTE, notes), (NOTE_COMMENT, comments), (NOTE_REACTION, reactions)):
            for pk, owner in found.items():
                if owner is not None:
                    self.owners[kind].setdefault(pk, owner)

    def check(self, text: Any, user_pk: Any) -> Any:
        assert isinstance(text, str), f"the server sent a binary frame: {text!r:.200}"
        assert_no_internals(text)
        frame = orjson.loads(text)
        self.frames += 1
        if isinstance(frame, dict):
            check_control(frame)
        else:
            assert isinstance(frame, list), f"neither records nor a message: {text[:200]}"
            for record in frame:
                self.check_record(record, user_pk)
        return frame

    def check_record(self, record: dict, user_pk: Any) -> None:
        self.records += 1
        assert record.get("_operation") in OPERATIONS and "id" in record, record
        kind = record["_instance_type"]
        for (holder, name), child in self.lists.items():
            if holder == kind and name in record:
                value = record[name]
                for pk in value if isinstance(value, list) else [value]:
                    owner = self.owners[child].get(pk)
                    assert owner is None or owner == user_pk, (
                        f"user {user_pk} was told of {child} {pk} of {owner} in {record}"
                    )
        if kind not in self.owners:
            return
        if kind == NOTE and "owner" in record:
            self.owners[NOTE].setdefault(record["id"], record["owner"])
            assert record["owner"] == user_pk, f"user {user_pk} received {record}"
        owner = self.owners[kind].get(record["id"])
        assert owner is None or owner == user_pk, f"user {user_pk} received {record} of {owner}"


# -- the database, row by row ------------------------------------------------------------------


def database_rows() -> dict[tuple[str, Any], dict]:
    """Every row of the test project's tables (the jobs app, users and tokens)."""
    models = [*apps.get_app_config("jobs").get_models(), get_user_model(), Token]
    rows = {}
    for model in models:
        for row in django_serializers.serialize("python", model._default_manager.order_by("pk")):
            rows[(row["model"], row["pk"])] = row["fields"]
    return rows


def changed_rows(before: dict, after: dict) -> list:
    return sorted(
        (key for key in before.keys() | after.keys() if before.get(key) != after.get(key)),
        key=repr,
    )


# -- frames ---------------------------------------------------------------------------------------

MISSING = object()
DEEP = "@@deep@@"  # replaced by 1000 nested arrays (deeper than orjson can encode)


def with_deep(frame: Any, depth: int = 1000) -> str:
    return orjson.dumps(frame).decode().replace(f'"{DEEP}"', "[" * depth + "]" * depth)


def vary(frame: dict, key: str, value: Any) -> dict:
    varied = copy.deepcopy(frame)
    if value is MISSING:
        varied.pop(key, None)
    else:
        varied[key] = value
    return varied


def save(write_id: Any, instance_type: str, instance_id: Any, data: Any) -> dict:
    return {
        "type": "write",
        "writeId": write_id,
        "operation": "save",
        "instanceType": instance_type,
        "instanceId": instance_id,
        "data": data,
    }


def create(
    write_id: Any, instance_type: str, parent_type: str, parent_id: Any, relation: str, data: Any
) -> dict:
    return {
        "type": "write",
        "writeId": write_id,
        "operation": "create",
        "instanceType": instance_type,
        "parentType": parent_type,
        "parentId": parent_id,
        "relationName": relation,
        "data": data,
    }


def delete(write_id: Any, instance_type: str, instance_id: Any) -> dict:
    return {
        "type": "write",
        "writeId": write_id,
        "operation": "delete",
        "instanceType": instance_type,
        "instanceId": instance_id,
    }


def call(call_id: Any, action: Any, params: Any = MISSING) -> dict:
    frame = {"callId": call_id, "action": action}
    if params is not MISSING:
        frame["params"] = params
    return frame


# -- expected replies (a dict matches when every key it names matches) --------------------------


def matches(expected: Any, actual: Any) -> bool:
    if callable(expected):
        return bool(expected(actual))
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(value, actual[key]) for key, value in expected.items()
        )
    return type(expected) is type(actual) and expected == actual


def has(*words: str) -> Callable[[Any], bool]:
    return lambda text: isinstance(text, str) and all(word in text for word in words)


def auth_refused(status: Any) -> dict:
    return {"type": "auth", "statusCode": status, "error": AUTH_ERRORS.get(status)}


def error(message: str, code: int = 400) -> dict:
    return {"type": "error", "error": {"code": code, "message": message}}


def refused(write_id: Any, code: int, message: Any = None) -> dict:
    expected: dict = {"code": code}
    if message is not None:
        expected["message"] = has(message) if isinstance(message, str) else message
    return {"type": "writeResponse", "writeId": write_id, "success": False, "error": expected}


def succeeded(write_id: Any) -> dict:
    return {"type": "writeResponse", "writeId": write_id, "success": True}


def answered(call_id: int, result: Any = None) -> dict:
    expected: dict = {"type": "actionResponse", "callId": call_id, "result": lambda _: True}
    if result is not None:
        expected["result"] = result
    return expected


def call_refused(call_id: int, code: int) -> dict:
    return {"type": "actionResponse", "callId": call_id, "error": {"code": code}}


# -- real clients ---------------------------------------------------------------------------------


class Conn:
    """A real WebSocket client whose every received frame goes through the witness."""

    def __init__(self, ws: Any, user_pk: Any, witness: Witness) -> None:
        self.ws = ws
        self.user_pk = user_pk
        self.witness = witness
        self.authenticated = False

    @classmethod
    async def open(cls, url: str, user_pk: Any, witness: Witness) -> Conn:
        ws = await websockets.connect(url, max_size=2**22, ping_interval=None)
        return cls(ws, user_pk, witness)

    async def send(self, frame: Any) -> None:
        """str: a text frame as is; bytes: a binary frame; anything else: JSON text."""
        if not isinstance(frame, str | bytes):
            frame = orjson.dumps(frame).decode()
        await self.ws.send(frame)

    async def read(self, units: float = 1.0) -> Any:
        text = await asyncio.wait_for(self.ws.recv(), timeout(units))
        frame = self.witness.check(text, self.user_pk)
        if not self.authenticated:
            assert isinstance(frame, dict), f"records before authentication: {text[:200]}"
            self.authenticated = frame == AUTH_OK
        return frame

    async def reply(self) -> dict:
        """The next reply (auth, error, actionResponse or writeResponse), records skipped."""
        deadline = time.monotonic() + timeout(2)
        while True:
            frame = await self.read(max(0.01, (deadline - time.monotonic()) / timeout()))
            if isinstance(frame, dict) and frame.get("type") in REPLIES:
                return frame

    async def start(self, token: str, last_update: Any = None) -> None:
        await self.send({"token": token, "lastUpdate": last_update})
        reply = await self.reply()
        assert reply == AUTH_OK, reply
        await self.until_end_marker()

    async def until_end_marker(self) -> None:
        anchors = None
        while True:
            frame = await self.read()
            if isinstance(frame, dict) and frame.get("type") == "initialAnchors":
                anchors = frame["anchorIds"]
            elif isinstance(frame, list) and frame[-1]["_operation"] == "end_initial_state":
                assert anchors is not None, "an end marker before initialAnchors"
                return

    async def probe(self) -> None:
        """The connection is open and served: a call is answered, and nothing came before."""
        await self.send(call(PROBE, "count_tasks", []))
        reply = await self.reply()
        assert matches(answered(PROBE), reply), f"expected the probe's answer, got {reply!r}"

    async def close_code(self) -> tuple[int, list]:
        """Frames read until the server closes the socket, and the close code."""
        frames = []
        deadline = time.monotonic() + timeout(2)
        try:
            while True:
                frames.append(await self.read(max(0.01, (deadline - time.monotonic()) / timeout())))
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return closed.rcvd.code, frames

    async def records_until(self, predicate: Callable[[dict], bool]) -> None:
        deadline = time.monotonic() + timeout(2)
        while True:
            frame = await self.read(max(0.01, (deadline - time.monotonic()) / timeout()))
            if isinstance(frame, list) and any(predicate(r) for r in frame):
                return


# -- the corpus --------------------------------------------------------------------------------


@dataclass
class Extra:
    """Rows beyond the World that hostile frames aim at."""

    foreign_task: int  # a task of world.other_job
    alice_note: int
    bob_note: int
    far_project: int  # a project alice and bob are not part of
    far_job: int  # its job; carol takes part in it
    outsider: int  # carol's participant in the far project
    ghost_token: str  # an inactive user's token
    participant: int  # alice's participant
    deadline: int
    spec: int
    asset: str


def build_extra(world: World) -> Extra:
    far_project = Project.objects.create(name="Far")
    far_job = Job.objects.create(project=far_project, title="Far job")
    outsider = Participant.objects.create(project=far_project, user=world.carol)
    _, ghost_token = make_user("ghost", active=False)
    return Extra(
        foreign_task=Task.objects.create(job=world.other_job, title="elsewhere").pk,
        alice_note=Note.objects.get(owner=world.alice, job=world.job).pk,
        bob_note=Note.objects.get(owner=world.bob, job=world.job).pk,
        far_project=far_project.pk,
        far_job=far_job.pk,
        outsider=outsider.pk,
        ghost_token=ghost_token,
        participant=Participant.objects.get(user=world.alice).pk,
        deadline=Deadline.objects.get(job=world.job).pk,
        spec=JobSpec.objects.get(job=world.job).pk,
        asset=str(Asset.objects.get(job=world.job).pk),
    )


@dataclass
class Case:
    """Frames one fresh connection sends, and what must come back.

    ``replies[i]`` is the reply expected to ``sends[i]`` (None: read nothing for it).
    ``close`` is the close code expected after the frames (None: the socket stays
    open, which a probe call shows). ``change_first`` commits a live change, through
    another client, before the frames: an unauthenticated socket must not see it.
    """

    name: str
    sends: list[Any]
    replies: list[Any]
    authenticate: bool = True
    user: str = "alice"
    path: str | None = None
    close: int | None = None
    change_first: bool = False
    after: Callable[[list], None] | None = None


def field_case(name: str, base: dict, key: str, variants: list, expect: Callable) -> Case:
    """One frame per wrong value of ``key``; ``expect(index, value)`` is its reply."""
    id_key = "callId" if "action" in base else "writeId"
    sends, replies = [], []
    for index, value in enumerate(variants):
        frame = vary(base, key, value)
        if key != id_key:
            frame[id_key] = index
        sends.append(frame)
        replies.append(expect(index, value))
    return Case(name, sends, replies)


def corpus(w: World, x: Extra) -> list[Case]:
    alice, bob, carol = w.tokens["alice"], w.tokens["bob"], w.tokens["carol"]
    task, foreign = w.tasks[0].pk, x.foreign_task
    task_one_here = Task.objects.filter(pk=1, job=w.job).exists()
    cases: list[Case] = []

    def pre_auth(name: str, first: Any, status: int, **kwargs: Any) -> None:
        codes = {400: 4400, 401: 4401, 403: 4403}
        cases.append(
            Case(
                name,
                [first],
                [auth_refused(status)],
                authenticate=False,
                close=codes[status],
                **kwargs,
            )
        )

    # Before authentication: every first frame that is not a valid auth frame is refused.
    for label, text in [
        ("invalid JSON", "{not json"),
        ("empty text", ""),
        ("null", "null"),
        ("true", "true"),
        ("a number", "42"),
        ("a string", '"token"'),
        ("an array", "[]"),
        ("an array holding an auth frame", orjson.dumps([{"token": alice}]).decode()),
        ("100k nested arrays", "[" * 100_000 + "]" * 100_000),
        ("100k unclosed arrays", "[" * 100_000),
        ("a binary non-UTF-8 frame", b"\xff\xfe\x00garbage"),
    ]:
        pre_auth(f"first frame: {label}", text, 400)
    for value in [True, 42, 1.5, [], {}, [alice], {"key": alice}]:
        pre_auth(f"token of type {type(value).__name__}: {value!r:.20}", {"token": value}, 400)
    for label, value in [
        ("null without a session", None),
        ("a JWT-shaped one", "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"),
        ("empty", ""),
        ("unknown", "nope"),
        ("100k characters", "x" * 100_000),
        ("a valid one with a NUL byte", alice + "\x00"),
        ("a NUL byte", "\x00"),
        ("a valid one upper-cased", alice.upper()),
        ("a valid one with a space", f" {alice}"),
        ("an inactive user's", x.ghost_token),
    ]:
        pre_auth(f"token: {label}", {"token": value}, 401)
    pre_auth("write before auth", save(1, TASK, task, {"title": "early"}), 400)
    pre_auth("create before auth", create(1, TASK, JOB, w.job.pk, "tasks", {"title": "early"}), 400)
    pre_auth("delete before auth", delete(1, TASK, task), 400)
    pre_auth("action before auth", call(1, "count_tasks", []), 400)
    pre_auth("write before auth, after a live change", save(1, TASK, task, {}), 400)
    cases[-1].change_first = True
    # has_permission is checked per route, with the route's kwargs.
    pre_auth("has_permission: carol on the job", {"token": carol}, 403)
    pre_auth(
        "has_permission: alice on a job of another project",
        {"token": alice},
        403,
        path=f"/ws/job/{x.far_job}/",
    )
    cases.append(
        Case(
            "has_permission: carol on her own project's job",
            [{"token": carol}],
            [AUTH_OK],
            authenticate=False,
            user="carol",
            path=f"/ws/job/{x.far_job}/",
        )
    )
    # Frames that smuggle a write or a call into the auth frame: only the auth happens.
    for label, extra in [
        ("a write", save(1, TASK, task, {"title": "smuggled"})),
        ("an action", call(1, "rename_repeatedly", [task, 1, "smuggled"])),
    ]:
        cases.append(
            Case(
                f"{label} smuggled into the auth frame",
                [{**extra, "token": alice}],
                [AUTH_OK],
                authenticate=False,
                change_first=True,
            )
        )
    for value in ["yesterday", [], {"t": 1}, True, -1, 1e308]:
        cases.append(
            Case(
                f"lastUpdate {value!r:.20}",
                [{"token": alice, "lastUpdate": value}],
                [AUTH_OK],
                authenticate=False,
            )
        )
    cases.append(
        Case(
            "frames too large before auth, then auth",
            ["x" * (LIMIT + 1), b"[" * (LIMIT + 1), {"token": alice}],
            [error("frame too large"), error("frame too large"), AUTH_OK],
            authenticate=False,
            change_first=True,
        )
    )
    cases.append(
        Case(
            "an auth frame sent as a binary frame",
            [orjson.dumps({"token": alice})],
            [AUTH_OK],
            authenticate=False,
        )
    )

    # After authentication: errors, and the socket stays open.
    invalid = [
        "{not json",
        "",
        "[1,",
        "\x00",
        "nul\x00l",
        "NaN",
        "Infinity",
        "1e400",
        "{'single': 'quotes'}",
        '{"a": 1,}',
        '"\\ud800"',
        "[" * 100_000 + "]" * 100_000,
        "[" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
    ]
    cases.append(Case("not JSON", invalid, [error("frame is not valid JSON")] * len(invalid)))
    unknown = [None, True, False, 0, -1.5, "text", [], [1, 2], {}, {"what": "ever"}]
    unknown += [{"type": "read"}, {"type": None}, {"type": ["write"]}, {"callid": 1}]
    cases.append(
        Case(
            "JSON that is not a message",
            [orjson.dumps(v).decode() for v in unknown],
            [error("unknown message")] * len(unknown),
        )
    )
    cases.append(
        Case(
            "binary frames",
            [b"\xff\xfe", orjson.dumps(call(7, "count_tasks", [])), b"", b"\x00" * 10],
            [
                error("frame is not valid JSON"),
                answered(7, len(w.tasks)),
                error("frame is not valid JSON"),
                error("frame is not valid JSON"),
            ],
        )
    )
    padding = LIMIT - 200
    cases.append(
        Case(
            "frames over RX_MAX_MESSAGE_SIZE, and one just under",
            [
                "x" * (LIMIT + 1),
                orjson.dumps(call(1, "count_tasks", ["x" * LIMIT])).decode(),
                "€" * (LIMIT // 3 + 1),  # fewer characters than the limit, more bytes
                b"x" * (LIMIT + 1),
                orjson.dumps({**call(2, "count_tasks", []), "pad": "x" * padding}).decode(),
            ],
            [error("frame too large")] * 4 + [answered(2, len(w.tasks))],
        )
    )
    cases.append(
        Case(
            "values nested 1000 deep (within what JSON decoding accepts)",
            [
                with_deep(call(1, DEEP, [])),
                with_deep(call(2, "count_tasks", [DEEP])),
                with_deep(call(3, "count_tasks", DEEP)),
                with_deep(call(DEEP, "count_tasks", [])),
                with_deep({"type": "write", "writeId": 4, "operation": DEEP}),
                with_deep({**save(5, TASK, task, {}), "instanceType": DEEP}),
                with_deep(save(6, TASK, DEEP, {"title": "forbidden"})),
                with_deep(save(7, JOB, w.job.pk, {"budget": DEEP})),
                with_deep(save(8, TASK, task, {"title": DEEP})),
                with_deep(save(9, TASK, task, DEEP)),
                with_deep(create(10, TASK, JOB, DEEP, "tasks", {"title": "x"})),
                with_deep({**create(11, TASK, JOB, w.job.pk, "tasks", {}), "relationName": DEEP}),
                with_deep({"token": DEEP}),
                with_deep(save(12, JOB, w.job.pk, {"budget": DEEP}), depth=60),
            ],
            [
                call_refused(1, 403),
                call_refused(2, 400),
                call_refused(3, 400),
                error("an action call needs an integer callId"),
                refused(4, 400, "unknown operation"),
                refused(5, 400, "unknown instance type"),
                refused(6, 400, "not in this context"),
                refused(7, 400, "nested too deeply"),
                refused(8, 400, "nested too deeply"),
                refused(9, 400, "data must be an object"),
                refused(10, 400, "not in this context"),
                refused(11, 400, "a create needs"),
                error("already authenticated"),
                refused(12, 400, "invalid data"),
            ],
        )
    )
    names = ["nope", "", "has_permission", "can_save", "get_instance_id", "__init__"]
    names += ["__class__", "send", "_write", "count_tasks ", "COUNT_TASKS", "count_tasks\x00"]
    cases.append(
        Case(
            "unknown action names",
            [call(i, name, []) for i, name in enumerate(names)]
            + [{"type": "action", "callId": 99}],
            [call_refused(i, 403) for i in range(len(names))] + [call_refused(99, 403)],
        )
    )
    base_call = call(0, "count_tasks", [])
    cases.append(
        field_case(
            "action callId of the wrong type",
            base_call,
            "callId",
            [None, True, 1.5, "1", [], {}, MISSING, -1],
            lambda i, v: (
                answered(-1, len(w.tasks))
                if v == -1 and type(v) is int
                else error("an action call needs an integer callId")
            ),
        )
    )
    bad_params = [None, True, 1, "x", [[]], [{"done": "yes"}], [{"nope": 1}], [None, 1]]
    bad_params += [{"nope": 1}, {"filters": []}, ["2026-01-01"]]
    cases.append(
        field_case(
            "action params of the wrong type",
            base_call,
            "params",
            [*bad_params, {}, MISSING],
            lambda i, v: (
                answered(i, len(w.tasks)) if i >= len(bad_params) else call_refused(i, 400)
            ),
        )
    )
    schedule = call(0, "schedule", [task, "2026-05-01", ["a"]])
    cases.append(
        field_case(
            "typed action params of the wrong type",
            schedule,
            "params",
            [
                [task, "not a date"],
                [task, "2026-13-45"],
                ["x", "2026-01-01"],
                [1.5, "2026-01-01"],
                [True, "2026-01-01"],
                [task, "2026-01-01", "a"],
                [task, "2026-01-01", [1]],
                [task],
                {"task_id": task},
                {"task_id": task, "due": "2026-01-01", "tags": None},
            ],
            lambda i, v: answered(i) if i == 9 else call_refused(i, 400),
        )
    )
    cases.append(
        Case(
            "a second auth frame does not switch users",
            [
                {"token": alice},
                {"token": bob},
                {"token": carol, "lastUpdate": None},
                {"token": 42},
                {"token": bob, "type": "write"},  # a write without writeId
                save(1, NOTE, x.bob_note, {"text": "who am I"}),
            ],
            [error("already authenticated")] * 4
            + [error("a write needs a writeId"), refused(1, 400, "not in this context")],
        )
    )

    # Writes: every field of the wrong type. The base writes are refused by can_save /
    # can_create ("forbidden"), so a variant that passes every check still changes nothing.
    base_save = save(0, TASK, task, {"title": "forbidden"})
    wrong_types = [None, True, 1, [], {}, MISSING, "rxdjango.channels.ContextChannel"]
    wrong_ids = [None, "abc", [], {}, [task], {"id": task}, -1, 0, 2**63, 1e300, "", MISSING]
    cases.append(
        field_case(
            "write type of the wrong type",
            base_save,
            "type",
            [None, True, 1, "WRITE", [], "writes", MISSING, "action"],
            lambda i, v: (
                error("an action call needs an integer callId")
                if v == "action"
                else error("unknown message")
            ),
        )
    )
    cases.append(
        field_case(
            "writeId of the wrong type",
            base_save,
            "writeId",
            [None, True, 1.5, [], {}, MISSING, "w-1", -1],
            lambda i, v: (
                refused(v, 403, "not allowed")
                if v in ("w-1", -1) and type(v) is not bool
                else error("a write needs a writeId")
            ),
        )
    )
    cases.append(
        field_case(
            "write operation of the wrong type",
            base_save,
            "operation",
            [None, True, 1, "SAVE", "upsert", [], {}, ["save"], MISSING, "save "],
            lambda i, v: refused(i, 400, "unknown operation"),
        )
    )
    cases.append(
        field_case(
            "instanceType of the wrong type",
            base_save,
            "instanceType",
            [*wrong_types, "", "jobs.serializers.Nope", "jobs.models.Task", "TaskSerializer"],
            lambda i, v: refused(i, 400, "unknown instance type"),
        )
    )
    cases.append(
        field_case(
            "instanceId of the wrong type",
            base_save,
            "instanceId",
            [*wrong_ids, str(task), True, 1.5],
            # A boolean is never an id; 1.5 reads as pk 1 (Django's int conversion).
            lambda i, v: (
                refused(i, 403, "not allowed")
                if v == str(task) or (v == 1.5 and v is not True and task_one_here)
                else refused(i, 400)
            ),
        )
    )
    data_cases = [
        (None, "data must be an object"),
        ([], "data must be an object"),
        ("x", "data must be an object"),
        (1, "data must be an object"),
        (True, "data must be an object"),
        ({"title": None}, "invalid data"),
        ({"title": []}, "invalid data"),
        ({"title": {}}, "invalid data"),
        ({"title": "x" * 101}, "invalid data"),
        ({"title": "nul\x00"}, "invalid data"),
        ({"title": "forbidden", "done": "maybe"}, "invalid data"),
        ({"title": "forbidden", "done": []}, "invalid data"),
        ({"title": "forbidden", "developer": "abc"}, "invalid data"),
        ({"title": "forbidden", "developer": True}, "invalid data"),
        ({"title": "forbidden", "developer": []}, "invalid data"),
        # No row can have that id: the same answer as for a row outside the context.
        ({"title": "forbidden", "developer": 2**63}, "developer points outside"),
        ({"title": "forbidden", "developer": x.outsider}, "developer points outside"),
        ({"title": "forbidden", "id": 999}, "not allowed"),
        ({"title": "forbidden", "labels": [1, 2]}, "not allowed"),
        ({"title": "forbidden", "title_length": 1}, "not allowed"),
        ({"title": "forbidden", "job": w.other_job.pk}, "not allowed"),
    ]
    cases.append(
        Case(
            "write data of the wrong type",
            [vary(base_save, "data", d) | {"writeId": i} for i, (d, _) in enumerate(data_cases)],
            [
                refused(i, 403 if m == "not allowed" else 400, m)
                for i, (_, m) in enumerate(data_cases)
            ],
        )
    )
    job_data = [
        {"budget": "1e999999"},
        {"budget": "NaN"},
        {"budget": []},
        {"budget": 1e300},
        {"starts": "0001-01-01T00:00:00+14:00"},
        {"starts": "9999-12-31T23:59:59-14:00"},
        {"starts": "yesterday"},
        {"starts": 1},
        {"project": x.far_project},
        {"title": "x" * 101},
        {"title": "forbidden", "spec": x.spec, "tasks": [1], "team": []},
    ]
    cases.append(
        Case(
            "job data out of range or pointing away",
            [save(i, JOB, w.job.pk, d) for i, d in enumerate(job_data)],
            [refused(i, 400) for i in range(len(job_data) - 1)]
            + [refused(len(job_data) - 1, 403, "not allowed")],
        )
    )
    base_create = create(0, TASK, JOB, w.job.pk, "tasks", {"title": "forbidden"})
    cases.append(
        field_case(
            "create parentType of the wrong type",
            base_create,
            "parentType",
            [None, 1, [], "jobs.serializers.Nope", MISSING, TASK],
            lambda i, v: refused(i, 400),
        )
    )
    cases.append(
        field_case(
            "create parentId of the wrong type or elsewhere",
            base_create,
            "parentId",
            [None, [], {}, "abc", w.other_job.pk, x.far_job, 2**63, MISSING, -1],
            lambda i, v: refused(i, 400),
        )
    )
    cases.append(
        field_case(
            "create relationName of the wrong type",
            base_create,
            "relationName",
            [None, 1, [], "nope", "asset_set", "notes", "project", "team", "spec", MISSING],
            lambda i, v: refused(i, 400),
        )
    )

    # Records of other anchors and of other users; foreign keys pointing outside.
    cases.append(
        Case(
            "writes outside the connection's anchors and user",
            [
                save(1, TASK, foreign, {"title": "hijack"}),
                delete(2, TASK, foreign),
                create(3, TASK, JOB, w.other_job.pk, "tasks", {"title": "sneaky"}),
                save(4, JOB, w.other_job.pk, {"title": "hijack"}),
                save(5, JOB, x.far_job, {"title": "hijack"}),
                save(6, NOTE, x.bob_note, {"text": "hijack"}),
                delete(7, NOTE, x.bob_note),
                save(8, NOTE, x.alice_note, {"owner": w.bob.pk}),
                save(9, NOTE, x.alice_note, {"job": w.other_job.pk}),
                save(10, NOTE, x.alice_note, {"job": x.far_job}),
                save(11, TASK, task, {"developer": x.outsider}),
                create(12, NOTE, JOB, w.job.pk, "notes", {"text": "forbidden", "owner": w.bob.pk}),
                save(13, JOB, w.job.pk, {"project": x.far_project}),
                create(14, TASK, JOB, x.far_job, "tasks", {"title": "far"}),
            ],
            [
                refused(1, 400, "not in this context"),
                refused(2, 400, "not in this context"),
                refused(3, 400, "not in this context"),
                refused(4, 400, "not in this context"),
                refused(5, 400, "not in this context"),
                refused(6, 400, "not in this context"),
                refused(7, 400, "not in this context"),
                refused(8, 400, "owner cannot be changed"),
                refused(9, 400, "job points outside this context"),
                refused(10, 400, "job points outside this context"),
                refused(11, 400, "developer points outside this context"),
                refused(12, 403, "not allowed"),
                refused(13, 400, "project points outside this context"),
                refused(14, 400, "not in this context"),
            ],
        )
    )
    cases.append(
        Case(
            "writes to types and operations not declared writable",
            [
                save(1, LABEL, w.labels[0].pk, {"name": "x"}),
                delete(2, JOB, w.job.pk),
                save(3, PARTICIPANT, x.participant, {"role": "admin"}),
                save(4, USER, w.alice.pk, {"username": "root"}),
                create(5, PARTICIPANT, PROJECT, w.project.pk, "participants", {"role": "x"}),
                delete(6, ASSET, x.asset),
                save(7, DEADLINE, x.deadline, {"label": "x"}),
                save(8, SPEC, x.spec, {"text": "x"}),
                delete(9, PROJECT, w.project.pk),
                create(10, LABEL, TASK, task, "labels", {"name": "x"}),
            ],
            [refused(i, 403, "is not allowed on") for i in range(1, 11)],
        )
    )

    # Floods: 429 errors, then close 4429.
    def flooded(frames: list) -> None:
        errors = [f for f in frames if isinstance(f, dict) and f.get("type") == "error"]
        assert errors, "no frame was refused"
        assert all(e == error("too many frames", 429) for e in errors), errors

    # The limit counts frames as the server reads them, and a server busy with queries
    # reads more slowly (on a loaded machine, below the limit: then nothing is a flood).
    # Calls the server refuses without a query keep this about the limit alone.
    cases.append(
        Case(
            "a flood",
            [call(i, "no_such_action", []) for i in range(10 * RATE)],
            [None] * (10 * RATE),
            close=4429,
            after=flooded,
        )
    )
    return cases


async def run_case(case: Case, url: str, tokens: dict, users: dict, witness, live) -> None:
    conn = await Conn.open(f"{url}{case.path}", users[case.user], witness)
    try:
        if case.authenticate:
            await conn.start(tokens[case.user])
        if case.change_first:
            await live.change()
        before = await db(database_rows)()
        witness.learn(before)
        for index, (frame, expected) in enumerate(zip(case.sends, case.replies, strict=True)):
            try:
                await conn.send(frame)
            except websockets.ConnectionClosed:
                assert case.close is not None, f"frame {index}: the server closed the socket"
                break
            if expected is None:
                continue
            reply = await conn.reply()
            assert matches(expected, reply), f"frame {index}: got {reply!r}"
            if reply == AUTH_OK:
                await conn.until_end_marker()
        if case.close is None:
            await conn.probe()
        else:
            code, rest = await conn.close_code()
            assert code == case.close, f"closed with {code}, expected {case.close}"
            if case.after is not None:
                case.after(rest)
            else:
                assert rest == [], f"frames after the reply: {rest!r:.300}"
    finally:
        await conn.ws.close()
    after = await db(database_rows)()
    assert after == before, f"the database changed: {changed_rows(before, after)}"


class Live:
    """Two well-behaved clients: a change one writes must reach the other."""

    def __init__(self, writer: Conn, reader: Conn, task_pk: int) -> None:
        self.writer, self.reader, self.task_pk = writer, reader, task_pk
        self.count = 0

    async def change(self) -> None:
        self.count += 1
        title = f"live {self.count}"
        write_id = f"live-{self.count}"
        await self.writer.send(save(write_id, TASK, self.task_pk, {"title": title}))
        assert await self.writer.reply() == succeeded(write_id)
        await self.reader.records_until(lambda r: r.get("title") == title)


async def test_hostile_frame_corpus_through_a_real_server(world, capfd):
    extra = await db(build_extra)(world)
    cases = await db(corpus)(world, extra)
    job_path = f"/ws/job/{world.job.pk}/"
    for case in cases:
        case.path = case.path or job_path
    users = {"alice": world.alice.pk, "bob": world.bob.pk, "carol": world.carol.pk}
    witness = Witness()
    sent = 0
    # The cases follow each other faster than one user may send (tests/test_limits.py
    # shows the per-user limit): only the per-connection limit applies here.
    with running_server(
        {"RX_TEST_RATE_LIMIT": str(RATE), "RX_TEST_USER_RATE_LIMIT": "0"}
    ) as server:
        alice = await Conn.open(f"{server}{job_path}", world.alice.pk, witness)
        await alice.start(world.tokens["alice"])
        bob = await Conn.open(f"{server}{job_path}", world.bob.pk, witness)
        await bob.start(world.tokens["bob"])
        live = Live(alice, bob, world.tasks[1].pk)
        for case in cases:
            try:
                await run_case(case, server.url, world.tokens, users, witness, live)
            except (AssertionError, TimeoutError, websockets.ConnectionClosed) as failure:
                raise AssertionError(f"case {case.name!r}: {failure!r}") from failure
            sent += len(case.sends)
            # The server goes on serving its other clients.
            await live.change()
        await alice.ws.close()
        await bob.ws.close()
        assert server.process.poll() is None, "the server died"
    # Nothing went wrong inside the server either (uvicorn and the rxdjango logger
    # write tracebacks to stderr).
    server_log = capfd.readouterr().err
    assert "Traceback" not in server_log, server_log[-4000:]
    with capfd.disabled():
        print(
            f"\nhostile corpus: {len(cases)} cases, {sent} frames sent, "
            f"{witness.frames} frames received ({witness.records} records) checked"
        )


# -- fuzz over the frame handler (in-process) ---------------------------------------------------

CHARS = st.characters(blacklist_categories=("Cs",))
DELETE_KEY = object()
FRAME_KEYS = [
    "type",
    "writeId",
    "operation",
    "instanceType",
    "instanceId",
    "parentType",
    "parentId",
    "relationName",
    "data",
    "callId",
    "action",
    "params",
    "token",
    "lastUpdate",
]
DATA_KEYS = ["title", "done", "developer", "labels", "text", "owner", "job", "name"]
DATA_KEYS += ["budget", "starts", "project", "id", "spec", "tasks", "notes"]


@dataclass(frozen=True)
class Deep:
    depth: int


def dumps(value: Any) -> str:
    """JSON text of ``value``; a Deep becomes that many nested arrays."""
    if isinstance(value, Deep):
        return "[" * value.depth + "]" * value.depth
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def mutate(frame: dict, mutations: list) -> dict:
    frame = copy.deepcopy(frame)
    for (in_data, key), value in mutations:
        target = frame
        if in_data and isinstance(frame.get("data"), dict):
            target = frame["data"]
        if value is DELETE_KEY:
            target.pop(key, None)
        else:
            # A copy: sampled values are shared between examples, and a later mutation
            # writing into this one must neither change them nor make a cycle.
            target[key] = copy.deepcopy(value)
    return frame


def truncate(text: str, at: int) -> str:
    return text[: at % max(1, len(text))]


def splice(text: str, at: int, insert: str) -> str:
    at %= max(1, len(text))
    return text[:at] + insert + text[at:]


def fuzz_frames(world: World, extra: Extra) -> st.SearchStrategy[str]:
    task = world.tasks[0].pk
    bases = [
        {"token": world.tokens["alice"], "lastUpdate": None},
        call(1, "count_tasks", []),
        call(2, "count_tasks", [{"done": True}]),
        call(3, "schedule", [task, "2026-05-01", ["a"]]),
        {"type": "action", "callId": 4, "action": "schedule", "params": {"task_id": 1}},
        save(5, TASK, task, {"title": "fuzzed"}),
        save(6, TASK, task, {"developer": extra.participant}),
        create(7, TASK, JOB, world.job.pk, "tasks", {"title": "fuzzed"}),
        delete(8, TASK, world.tasks[-1].pk),
        save(9, NOTE, extra.alice_note, {"text": "fuzzed"}),
        save(10, NOTE, extra.bob_note, {"text": "fuzzed"}),
        delete(11, NOTE, extra.bob_note),
        create(12, NOTE, JOB, world.job.pk, "notes", {"text": "fuzzed"}),
        save(13, JOB, world.job.pk, {"title": "fuzzed"}),
        create(14, ASSET, JOB, world.job.pk, "asset_set", {"name": "fuzzed"}),
        save(15, TASK, extra.foreign_task, {"title": "fuzzed"}),
        create(16, TASK, JOB, world.other_job.pk, "tasks", {"title": "fuzzed"}),
        save(17, LABEL, world.labels[0].pk, {"name": "fuzzed"}),
    ]
    pool = [
        *(t.pk for t in world.tasks),
        extra.foreign_task,
        extra.alice_note,
        extra.bob_note,
        world.job.pk,
        world.other_job.pk,
        extra.far_job,
        extra.far_project,
        extra.outsider,
        extra.participant,
        extra.asset,
        world.alice.pk,
        world.bob.pk,
        *(label.pk for label in world.labels),
        0,
        -1,
        2**63,
        str(task),
        "",
        "forbidden",
        *(TASK, NOTE, JOB, ASSET, LABEL, PARTICIPANT, USER, PROJECT),
        *("save", "create", "delete", "write", "action"),
        *("tasks", "notes", "asset_set", "project", "labels", "team", "spec"),
        *("count_tasks", "schedule", "has_permission", "can_save"),
        world.tokens["alice"],
        world.tokens["bob"],
        world.tokens["carol"],
    ]
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(CHARS, max_size=20)
        | st.sampled_from(pool)
    )
    values = st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(DATA_KEYS) | st.text(CHARS, max_size=8), children, max_size=4
            )
        ),
        max_leaves=10,
    )
    wrong = st.sampled_from([None, True, 0, -1, 1.5, "", [], {}, [1], {"id": 1}, "\x00"])
    value = st.just(DELETE_KEY) | wrong | values | st.integers(1, 1020).map(Deep)

    def mutations_of(base: dict) -> st.SearchStrategy[dict]:
        """The base with some of its own fields (mostly) or any field changed."""
        # The envelope (type, ids) is left alone here, so most frames reach the checks
        # behind it; the second branch changes it too.
        own = [(False, key) for key in base if key not in ("type", "writeId", "callId")]
        own += [(True, key) for key in base.get("data", {})]
        where = st.sampled_from(own) | st.tuples(
            st.booleans(), st.sampled_from(FRAME_KEYS + DATA_KEYS) | st.text(max_size=6)
        )
        changes = st.lists(st.tuples(where, value), min_size=1, max_size=3)
        return changes.map(lambda change: mutate(base, change))

    mutated = st.sampled_from(bases).flatmap(mutations_of)
    base_texts = st.sampled_from([dumps(b) for b in bases])
    raw = (
        st.text(CHARS, max_size=40)
        | st.builds(truncate, base_texts, st.integers(0, 400))
        | st.builds(splice, base_texts, st.integers(0, 400), st.text(CHARS, min_size=1, max_size=3))
    )
    mutated_text = mutated.map(dumps)
    return st.one_of(mutated_text, mutated_text, mutated_text, values.map(dumps), raw)


def expected_reply(text: str) -> tuple[str, Any]:
    """The reply the protocol promises for a frame sent after authentication."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "error", "frame is not valid JSON"
    if isinstance(frame, dict) and ("action" in frame or frame.get("type") == "action"):
        call_id = frame.get("callId")
        if isinstance(call_id, bool) or not isinstance(call_id, int):
            return "error", "an action call needs an integer callId"
        return "actionResponse", call_id
    if isinstance(frame, dict) and frame.get("type") == "write":
        write_id = frame.get("writeId")
        if isinstance(write_id, bool) or not isinstance(write_id, int | str):
            return "error", "a write needs a writeId"
        return "writeResponse", write_id
    if isinstance(frame, dict) and "token" in frame:
        return "error", "already authenticated"
    return "error", "unknown message"


def inside(key: tuple, before: dict, after: dict, world: World) -> bool:
    """Whether a changed row lies inside alice's anchor (and is hers, for notes)."""
    model, pk = key
    rows = [row for row in (before.get(key), after.get(key)) if row is not None]
    if model == "jobs.job":
        return pk == world.job.pk
    if model in ("jobs.task", "jobs.asset"):
        return all(row["job"] == world.job.pk for row in rows)
    if model == "jobs.note":
        return all(row["job"] == world.job.pk and row["owner"] == world.alice.pk for row in rows)
    return False


class InProcessClient:
    """A ChannelCommunicator whose every frame goes through the witness."""

    def __init__(self, path: str, token: str, user_pk: Any, witness: Witness) -> None:
        from testproject.asgi import application

        self.comm = ChannelCommunicator(application, path, token=token, channel=JobChannel)
        self.user_pk = user_pk
        self.witness = witness

    async def read(self, units: float = 1.0) -> Any:
        message = await self.comm.receive_output(timeout(units))
        if message["type"] == "websocket.close":
            raise ConnectionClosed(message.get("code", 1000))
        assert message["type"] == "websocket.send", message
        frame = self.witness.check(message.get("text", message.get("bytes")), self.user_pk)
        assert self.comm.state is not None
        self.comm.state.apply(frame)
        return frame

    async def send_text(self, text: str) -> None:
        await self.comm.send_input({"type": "websocket.receive", "text": text})

    async def start(self) -> None:
        assert await self.comm.connect()
        await self.send_text(orjson.dumps({"token": self.comm.token}).decode())
        assert await self.read() == AUTH_OK
        state = self.state
        while not (state.anchors and state.end_markers >= len(state.anchors)):
            await self.read()

    async def close(self) -> None:
        """Disconnect (whatever state the connection is in) and wait for the consumer."""
        with contextlib.suppress(Exception):
            await self.comm.disconnect()
        self.comm.stop(exceptions=False)

    @property
    def state(self) -> ClientState:
        assert self.comm.state is not None
        return self.comm.state


class Fuzz:
    def __init__(self, world: World, extra: Extra) -> None:
        self.world = world
        self.witness = Witness()
        path = f"/ws/job/{world.job.pk}/"
        self.alice = InProcessClient(path, world.tokens["alice"], world.alice.pk, self.witness)
        self.bob = InProcessClient(path, world.tokens["bob"], world.bob.pk, self.witness)
        self.probes = itertools.count(10**12)
        self.tried = 0
        self.kinds: dict[str, int] = {}

    async def start(self) -> None:
        await self.alice.start()
        await self.bob.start()

    async def reconnect_if_gone(self) -> None:
        """A fresh connection for alice if a failed example broke hers, so each example
        (and its replays while shrinking) starts on a live connection."""
        if not self.alice.comm.future.done():
            return
        await self.alice.close()
        self.alice = InProcessClient(
            self.alice.comm.scope["path"],
            self.world.tokens["alice"],
            self.world.alice.pk,
            self.witness,
        )
        await self.alice.start()

    async def send(self, text: str) -> dict:
        """Send a fuzzed frame and a probe call; the one reply to the frame (records
        that arrive meanwhile go through the witness)."""
        probe = next(self.probes)
        await self.alice.send_text(text)
        await self.alice.send_text(orjson.dumps(call(probe, "count_tasks", [])).decode())
        replies = []
        while True:
            try:
                frame = await self.alice.read()
            except ConnectionClosed as closed:
                raise AssertionError(f"closed with {closed.code} after {text[:300]!r}") from None
            if isinstance(frame, list):
                continue
            if frame.get("type") == "actionResponse" and frame.get("callId") == probe:
                break
            replies.append(frame)
        assert len(replies) == 1, f"{text[:300]!r}: expected one reply, got {replies!r:.500}"
        return replies[0]

    def check(self, text: str, reply: dict, before: dict, after: dict) -> None:
        kind, detail = expected_reply(text)
        context = f"{text[:300]!r} -> {reply!r:.500}"
        assert reply.get("type") == kind, context
        if kind == "error":
            assert reply == error(detail), context
        elif kind == "actionResponse":
            assert reply["callId"] == detail, context
        else:
            assert reply["writeId"] == detail, context
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        changed = changed_rows(before, after)
        if reply.get("type") == "writeResponse" and reply["success"]:
            self.kinds["successful writes"] = self.kinds.get("successful writes", 0) + 1
            outside = [key for key in changed if not inside(key, before, after, self.world)]
            assert not outside, f"{context}: a write changed rows outside the anchor {outside}"
        else:
            assert not changed, f"{context}: the database changed {changed}"

    async def finish(self) -> None:
        """A last change both clients must see; then their states equal the database's."""
        await self.alice.send_text(
            orjson.dumps(save("end", JOB, self.world.job.pk, {"title": "fuzz over"})).decode()
        )
        while True:
            frame = await self.alice.read()
            if isinstance(frame, dict) and frame.get("type") == "writeResponse":
                assert frame == succeeded("end"), frame
                break
        while True:
            frame = await self.bob.read()
            if isinstance(frame, list) and any(r.get("title") == "fuzz over" for r in frame):
                break
        assert await self.alice.comm.receive_nothing(0.05)
        for client, user in ((self.alice, self.world.alice), (self.bob, self.world.bob)):
            assert client.state.tree() == await db(_expected)(self.world.job.pk, user)

    async def close(self) -> None:
        for client in (self.alice, self.bob):
            await client.close()


def _expected(job_pk: int, user: Any) -> Any:
    return expected_state(JobSerializer, Job.objects.get(pk=job_pk), user)


def test_fuzzed_frames_after_auth(world_sync, capsys):
    world = world_sync
    extra = build_extra(world)
    fuzz = Fuzz(world, extra)
    loop = asyncio.new_event_loop()
    with override_settings(RX_RATE_LIMIT=None):
        try:
            loop.run_until_complete(fuzz.start())

            @settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(text=fuzz_frames(world, extra))
            def one_frame(text: str) -> None:
                loop.run_until_complete(fuzz.reconnect_if_gone())
                before = database_rows()
                fuzz.witness.learn(before)
                reply = loop.run_until_complete(fuzz.send(text))
                after = database_rows()
                fuzz.witness.learn(after)
                fuzz.tried += 1
                fuzz.check(text, reply, before, after)

            one_frame()
            loop.run_until_complete(fuzz.finish())
        finally:
            loop.run_until_complete(fuzz.close())
            loop.close()
    with capsys.disabled():
        print(
            f"\nhostile fuzz (after auth): {fuzz.tried} frames tried; replies {fuzz.kinds}; "
            f"{fuzz.witness.frames} frames ({fuzz.witness.records} records) checked"
        )


@dataclass
class FirstFrames:
    tried: int = 0
    outcomes: dict[int, int] = field(default_factory=dict)


def test_fuzzed_first_frames(world_sync, capsys):
    """Any first frame: the reply the auth table promises, then the close; no data."""
    world = world_sync
    extra = build_extra(world)
    witness = Witness()
    path = f"/ws/job/{world.job.pk}/"
    by_token = {
        world.tokens["alice"]: (200, world.alice.pk),
        world.tokens["bob"]: (200, world.bob.pk),
        world.tokens["carol"]: (403, world.carol.pk),
        extra.ghost_token: (401, None),
    }
    counts = FirstFrames()
    loop = asyncio.new_event_loop()

    async def first(text: str) -> None:
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            frame = None
        given = isinstance(frame, dict) and "token" in frame
        token = frame["token"] if given else None
        if given and isinstance(token, str):
            status, user_pk = by_token.get(token, (401, None))
        else:  # null asks for a session, which this socket has not: 401; no token, 400
            status, user_pk = (401, None) if given and token is None else (400, None)
        client = InProcessClient(path, "", user_pk, witness)
        try:
            assert await client.comm.connect()
            await client.send_text(text)
            reply = await client.read()
            context = f"{text[:300]!r} -> {reply!r}"
            if status == 200:
                assert reply == AUTH_OK, context
                while not (client.state.anchors and client.state.end_markers >= 1):
                    await client.read()
            else:
                assert reply == auth_refused(status), context
                try:
                    unexpected = await client.read()
                except ConnectionClosed as closed:
                    assert closed.code == 4000 + status, context
                else:
                    raise AssertionError(f"{context}: then {unexpected!r}")
        finally:
            await client.close()
        counts.outcomes[status] = counts.outcomes.get(status, 0) + 1

    auth_frames = st.fixed_dictionaries(
        {
            "token": st.sampled_from(sorted(by_token))
            | st.text(CHARS, max_size=50)
            | st.sampled_from(sorted(by_token)).map(lambda token: token + "\x00")
        },
        optional={
            "lastUpdate": st.none()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.integers(-(2**70), 2**70)
            | st.text(max_size=5)
        },
    ).map(lambda d: json.dumps(d))

    any_frame = fuzz_frames(world, extra)

    # Half auth frames, half anything (one_of would weigh each branch of the fuzz
    # frames like the auth frames).
    @settings(
        max_examples=max(1, FUZZ_EXAMPLES // 2),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(text=st.booleans().flatmap(lambda auth: auth_frames if auth else any_frame))
    def one_first_frame(text: str) -> None:
        before = database_rows()
        loop.run_until_complete(first(text))
        counts.tried += 1
        assert database_rows() == before, text[:300]

    try:
        one_first_frame()
    finally:
        loop.close()
    with capsys.disabled():
        print(f"\nhostile fuzz (first frames): {counts.tried} frames tried; {counts.outcomes}")
