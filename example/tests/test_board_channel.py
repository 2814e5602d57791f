"""The board channel over real sockets: action errors, card positions, the cost of presence."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from browser_support import UNIT, ExampleServer, manage

CARD = "board.serializers.CardSerializer"
COLUMN = "board.serializers.ColumnSerializer"
QUIET = UNIT / 10  # no frame for this long: nothing more is on its way


class BoardSocket:
    """One authenticated client of a board, keeping the records and `viewers` it received."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.records: dict[tuple[str, Any], dict[str, Any]] = {}
        self.viewers: list[int] = []  # every `viewers` value received, in order
        self._next_id = 0

    def receive(self, timeout: float) -> Any:
        """Read one frame and keep what it says; raises TimeoutError."""
        frame = json.loads(self.ws.recv(timeout=timeout))
        if isinstance(frame, list):
            for record in frame:
                if "id" not in record:  # a notification
                    continue
                key = (record["_instance_type"], record["id"])
                self.records[key] = {**self.records.get(key, {}), **record}
        elif frame.get("type") == "runtimeVar" and frame["var"] == "viewers":
            self.viewers.append(frame["value"])
        return frame

    def read_until(self, done: Callable[[Any], bool], seconds: float = UNIT * 2) -> Any:
        """Read frames until ``done(frame)``; return that frame."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the expected frame never came"
            frame = self.receive(remaining)
            if done(frame):
                return frame

    def wait_until(self, ready: Callable[[], bool], seconds: float = UNIT * 2) -> None:
        """Read frames until ``ready()`` holds of what was received."""
        if not ready():
            self.read_until(lambda _frame: ready(), seconds)

    def call(self, action: str, *params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        self.ws.send(json.dumps({"callId": call_id, "action": action, "params": list(params)}))
        return self._reply("actionResponse", "callId", call_id)

    def save_card(self, card_id: int, data: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        write_id = self._next_id
        self.ws.send(
            json.dumps(
                {
                    "type": "write",
                    "writeId": write_id,
                    "operation": "save",
                    "instanceType": CARD,
                    "instanceId": card_id,
                    "data": data,
                }
            )
        )
        return self._reply("writeResponse", "writeId", write_id)

    def _reply(self, kind: str, key: str, value: int) -> dict[str, Any]:
        return self.read_until(
            lambda frame: (
                isinstance(frame, dict) and frame.get("type") == kind and frame.get(key) == value
            )
        )

    def cards_of(self, column_id: int) -> list[int]:
        return self.records[(COLUMN, column_id)]["cards"]

    def position(self, card_id: int) -> int:
        return self.records[(CARD, card_id)]["position"]


def settle(*sockets: BoardSocket, seconds: float = UNIT * 2) -> None:
    """Read until none of ``sockets`` has received anything for ``QUIET`` seconds."""
    deadline = time.monotonic() + seconds
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < QUIET:
        assert time.monotonic() < deadline, "the sockets never went quiet"
        for socket in sockets:
            try:
                socket.receive(QUIET / 20)
            except TimeoutError:
                continue
            quiet_since = time.monotonic()


def login_token(server: ExampleServer, username: str) -> str:
    request = urllib.request.Request(
        f"{server.url}api/login/",
        data=json.dumps({"username": username, "password": "demo"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=UNIT) as response:
        return json.load(response)["token"]


def open_board(stack: ExitStack, server: ExampleServer, token: str, board_id: int) -> BoardSocket:
    """Connect, authenticate and read the board's initial state up to its end marker."""
    ws = stack.enter_context(
        connect(
            f"ws://127.0.0.1:{server.port}/ws/board/{board_id}/",
            origin=f"http://127.0.0.1:{server.port}",
            open_timeout=UNIT,
        )
    )
    ws.send(json.dumps({"token": token}))
    socket = BoardSocket(ws)
    assert socket.receive(UNIT) == {"type": "auth", "statusCode": 200}
    socket.read_until(
        lambda frame: (
            isinstance(frame, list)
            and any(record.get("_operation") == "end_initial_state" for record in frame)
        )
    )
    return socket


def shell(server: ExampleServer, code: str) -> Any:
    """Run ORM code in a separate process; it prints one JSON value."""
    return json.loads(manage("shell", "-c", code, env=server.env).strip().splitlines()[-1])


def seeded_ids(server: ExampleServer) -> dict[str, int]:
    """Ids of the seeded boards, columns and cards, by name or title."""
    return shell(
        server,
        "import json; from board.models import Board, Card, Column; print(json.dumps({"
        "**{b.name: b.pk for b in Board.objects.all()},"
        "**{c.title: c.pk for c in Column.objects.all()},"
        "**{c.title: c.pk for c in Card.objects.all()}}))",
    )


def stored_positions(server: ExampleServer, board_id: int) -> dict[str, list[int]]:
    """The positions of each column's cards as stored, in order."""
    return shell(
        server,
        "import json; from board.models import Column; print(json.dumps({c.title: "
        "list(c.cards.order_by('position', 'id').values_list('position', flat=True)) "
        f"for c in Column.objects.filter(board_id={board_id})}}))",
    )


@pytest.fixture
def ids(server: ExampleServer) -> dict[str, int]:
    return seeded_ids(server)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as sockets:
        yield sockets


def test_a_missing_card_or_column_answers_404_and_the_socket_stays_open(
    server: ExampleServer, ids: dict[str, int], stack: ExitStack
):
    alice = open_board(stack, server, login_token(server, "alice"), ids["Launch"])
    card, done = ids["Write the press release"], ids["Done"]
    elsewhere = ids["Soon"]  # a column of another board
    missing = 10**6

    for action, params in [
        ("archive_column", [missing]),
        ("archive_column", [elsewhere]),
        ("move_card", [missing, done, 0]),
        ("move_card", [card, missing, 0]),
        ("move_card", [card, elsewhere, 0]),
    ]:
        reply = alice.call(action, *params)
        assert reply["error"]["code"] == 404, (action, params, reply)
        assert "no such" in reply["error"]["message"]

    assert alice.call("move_card", card, done, 0) == {
        "type": "actionResponse",
        "callId": 6,
        "result": None,
    }
    assert alice.call("archive_column", done)["result"] is True
    assert stored_positions(server, ids["Launch"])["Done"] == [0, 1]


def test_a_huge_position_puts_the_card_last_and_keeps_positions_dense(
    server: ExampleServer, ids: dict[str, int], stack: ExitStack
):
    alice = open_board(stack, server, login_token(server, "alice"), ids["Launch"])
    card, pick = ids["Write the press release"], ids["Pick a date"]
    todo, doing, done = ids["To do"], ids["Doing"], ids["Done"]

    assert alice.call("move_card", card, done, 10**12) == {
        "type": "actionResponse",
        "callId": 1,
        "result": None,
    }
    alice.wait_until(lambda: alice.cards_of(done) == [pick, card] and alice.position(card) == 1)
    assert alice.position(pick) == 0
    alice.wait_until(lambda: alice.position(ids["Book the venue"]) == 0)  # left behind: renumbered
    assert stored_positions(server, ids["Launch"]) == {
        "To do": [0],
        "Doing": [0],
        "Done": [0, 1],
    }

    assert alice.save_card(card, {"title": "Press release, sent"})["success"] is True
    alice.wait_until(lambda: alice.records[(CARD, card)]["title"] == "Press release, sent")

    assert alice.call("move_card", card, done, 0)["result"] is None
    alice.wait_until(lambda: alice.cards_of(done) == [card, pick])
    assert alice.call("move_card", card, doing, 2**31)["result"] is None
    alice.wait_until(lambda: alice.cards_of(doing) == [ids["Fix the demo"], card])
    assert alice.call("move_card", card, todo, -5)["result"] is None
    alice.wait_until(lambda: alice.cards_of(todo) == [card, ids["Book the venue"]])
    assert stored_positions(server, ids["Launch"]) == {
        "To do": [0, 1],
        "Doing": [0],
        "Done": [0],
    }
    assert alice.save_card(card, {"title": "Press release, resent"})["success"] is True


def test_a_join_or_a_leave_costs_each_other_viewer_one_frame(
    server: ExampleServer, ids: dict[str, int], stack: ExitStack
):
    tokens = {name: login_token(server, name) for name in ("alice", "bob")}
    board = ids["Launch"]
    sockets = [
        open_board(stack, server, tokens["alice" if i % 2 == 0 else "bob"], board) for i in range(6)
    ]
    for socket in sockets:
        socket.wait_until(lambda socket=socket: socket.viewers[-1:] == [6])
    settle(*sockets)
    assert [socket.viewers[-1] for socket in sockets] == [6] * 6
    first = sockets[0]
    first.viewers.clear()

    with ExitStack() as seventh_only:
        seventh = open_board(seventh_only, server, tokens["bob"], board)
        seventh.wait_until(lambda: seventh.viewers[-1:] == [7])
        first.wait_until(lambda: first.viewers[-1:] == [7])
        settle(first, seventh)
        # Each presence event handled sends a `viewers` frame: the first socket handled
        # one event for this join, not one per viewer.
        assert first.viewers == [7]
        assert seventh.viewers[-1] == 7
        assert seventh.viewers == sorted(seventh.viewers)  # it only counts up to 7
    first.viewers.clear()

    first.wait_until(lambda: first.viewers[-1:] == [6])
    settle(*sockets)
    assert first.viewers == [6]  # one frame for the leave too
    assert [socket.viewers[-1] for socket in sockets] == [6] * 6


def test_only_the_owner_may_add_members_and_the_refusal_says_why(
    server: ExampleServer, ids: dict[str, int], stack: ExitStack
):
    launch = ids["Launch"]
    bob = open_board(stack, server, login_token(server, "bob"), launch)
    assert bob.call("add_member", "carol")["error"] == {
        "code": 403,
        "message": "Only the board's owner can add members.",
    }
    alice = open_board(stack, server, login_token(server, "alice"), launch)
    assert alice.call("add_member", "bob")["error"]["message"] == (
        "bob is already a member of this board."
    )
    assert alice.call("add_member", " carol ")["result"] == "carol"
    members = shell(
        server,
        "import json; from board.models import Board; print(json.dumps(sorted("
        f"Board.objects.get(pk={launch}).members.values_list('username', flat=True))))",
    )
    assert members == ["alice", "bob", "carol"]
