"""The serializers real projects write: what a client holds stays the serializer's output.

One channel (``patterns.BoardChannel``) uses the patterns whose values come from rows
other than the record's own: a dotted ``source=`` into another model, slug related
fields (one and many), a method field reading the record's subtree (tracked by
default), a method field reading rows outside the tree (declared with
``@depends_on``), and a multi-table-inheritance child saved through its parent class.
After each change, made with ``save()`` or with SQL no signal sees, the watching
client must hold ``BoardSerializer(board).data`` read fresh. Runs on both backends
and both databases (the suite's passes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async as db
from channels.routing import URLRouter
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.db import connection
from django.test.utils import override_settings
from django.urls import path
from patterns.channels import BoardChannel
from patterns.models import (
    Board,
    Card,
    Gadget,
    Membership,
    Note,
    Remark,
    SpecialCard,
    Tag,
    UsedGadget,
)
from patterns.serializers import BoardSerializer, CardSerializer
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from rxdjango import _codec
from rxdjango._registry import unregister as _unregister
from rxdjango.apps import install_capture
from rxdjango.channels import ContextChannel
from rxdjango.decorators import depends_on
from rxdjango.exceptions import ChannelDeclarationError

from support import connect, converges, expected_state, make_user, receive

pytestmark = pytest.mark.django_db(transaction=True)


def make_board() -> dict[str, Any]:
    owner, token = make_user("owner")
    helper, _ = make_user("helper")
    board = Board.objects.create(name="board", owner=owner)
    urgent, later = Tag.objects.create(name="urgent"), Tag.objects.create(name="later")
    first = Card.objects.create(board=board, title="first", assignee=helper)
    first.tags.add(urgent)
    Card.objects.create(board=board, title="second")
    special = SpecialCard.objects.create(board=board, showcase=board, title="special", priority=1)
    return {
        "board": board,
        "token": token,
        "owner": owner,
        "helper": helper,
        "first": first,
        "special": special,
        "tags": (urgent, later),
    }


def board_state(board: Board) -> Callable[[], Any]:
    return lambda: expected_state(BoardSerializer, Board.objects.get(pk=board.pk))


def _sql(statement: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def rename_user_with_save(world: dict) -> None:
    helper = get_user_model().objects.get(pk=world["helper"].pk)
    helper.username = "renamed helper"
    helper.save()


def rename_user_with_sql(world: dict) -> None:
    User = get_user_model()
    _sql(f"UPDATE {_table(User)} SET username = %s WHERE id = %s", ["sql", world["helper"].pk])


def rename_owner(world: dict) -> None:
    get_user_model().objects.filter(pk=world["owner"].pk).update(username="new owner")


def rename_tag(world: dict) -> None:
    tag = Tag.objects.get(pk=world["tags"][0].pk)
    tag.name = "very urgent"
    tag.save()


def add_tag(world: dict) -> None:
    Card.objects.get(pk=world["first"].pk).tags.add(world["tags"][1])


def add_tag_with_sql(world: dict) -> None:
    through = Card.tags.through
    _sql(
        f"INSERT INTO {_table(through)} (card_id, tag_id) VALUES (%s, %s)",
        [world["first"].pk, world["tags"][1].pk],
    )


def toggle_done(world: dict) -> None:
    card = Card.objects.get(pk=world["first"].pk)
    card.done = True
    card.save()


def toggle_done_with_update(world: dict) -> None:
    Card.objects.filter(board=world["board"]).update(done=True)


def add_note(world: dict) -> None:
    Note.objects.create(board=world["board"], text="outside the tree")


def add_note_with_sql(world: dict) -> None:
    _sql(f"INSERT INTO {_table(Note)} (board_id, text) VALUES (%s, %s)", [world["board"].pk, "x"])


def save_special_through_parent(world: dict) -> None:
    card = Card.objects.get(pk=world["special"].pk)  # the parent class, same row
    card.title = "saved through Card"
    card.save()


CHANGES = {
    "dotted source, save": rename_user_with_save,
    "dotted source, SQL": rename_user_with_sql,
    "slug related field, update()": rename_owner,
    "slug related many, renamed": rename_tag,
    "slug related many, added": add_tag,
    "slug related many, added by SQL": add_tag_with_sql,
    "method field over the subtree": toggle_done,
    "method field over the subtree, update()": toggle_done_with_update,
    "declared method field": add_note,
    "declared method field, SQL": add_note_with_sql,
    "multi-table inheritance, saved through the parent": save_special_through_parent,
}


async def test_the_initial_state_is_the_serializer_output(application):
    world = await db(make_board)()
    client = await connect(
        application, f"/ws/board/{world['board'].pk}/", world["token"], channel=BoardChannel
    )
    assert client.state.tree() == await db(board_state(world["board"]))()
    await client.disconnect()


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
async def test_a_change_to_a_value_read_from_other_rows_reaches_the_client(application, change):
    world = await db(make_board)()
    path = f"/ws/board/{world['board'].pk}/"
    client = await connect(application, path, world["token"], channel=BoardChannel)
    before = client.state.tree()
    await db(change)(world)
    want = board_state(world["board"])
    assert await db(want)() != before, "the change must show in the serializer's output"
    await converges(receive(client), client.state, want)
    await client.disconnect()


# -- serializers that used to fail on every connect, or at startup without a name -------


def _channel(name: str, state: serializers.ModelSerializer) -> type[ContextChannel]:
    meta = type("Meta", (), {"state": state})
    allow = staticmethod(lambda user, board_id: True)
    return type(name, (ContextChannel,), {"Meta": meta, "has_permission": allow})


async def _served(channel: type[ContextChannel], board: Board, token: str) -> Any:
    """The tree a client holds of ``board`` through ``channel``."""
    router = URLRouter([path("adhoc/<int:board_id>/", channel.as_asgi())])
    client = await connect(router, f"/adhoc/{board.pk}/", token, channel=channel)
    try:
        return client.state.tree()
    finally:
        await client.disconnect()
        _unregister(channel)


class CardDepthSerializer(serializers.ModelSerializer):
    class Meta:
        model = Card
        fields = ["id", "title", "board", "tags"]
        depth = 1  # two relations: DRF makes two classes named NestedSerializer


class BoardDepthSerializer(serializers.ModelSerializer):
    cards = CardDepthSerializer(many=True)

    class Meta:
        model = Board
        fields = ["id", "name", "cards"]


async def test_depth_with_several_relations_serves_the_serializer_output(application):
    world = await db(make_board)()
    channel = _channel("DepthChannel", BoardDepthSerializer())
    tree = await _served(channel, world["board"], world["token"])
    want = await db(lambda: expected_state(BoardDepthSerializer, world["board"]))()
    assert tree == want


class ShoutingCardSerializer(serializers.ModelSerializer):
    class Meta:
        model = Card
        fields = ["id", "title"]

    def to_representation(self, instance: Card) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["shout"] = data.pop("title").upper()  # renames a key, adds none of its own
        return data


class BoardOfShoutsSerializer(serializers.ModelSerializer):
    cards = ShoutingCardSerializer(many=True)

    class Meta:
        model = Board
        fields = ["id", "name", "cards"]


async def test_a_to_representation_override_without_nested_fields_is_served_as_is(application):
    world = await db(make_board)()
    channel = _channel("ShoutChannel", BoardOfShoutsSerializer())
    tree = await _served(channel, world["board"], world["token"])
    assert tree == await db(lambda: expected_state(BoardOfShoutsSerializer, world["board"]))()
    assert tree["cards"][0]["shout"] == "FIRST"


class HyperlinkedBoardSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="board-detail")
    cards = CardSerializer(many=True)

    class Meta:
        model = Board
        fields = ["id", "url", "name", "cards"]


@override_settings(RX_BASE_URL="https://api.example.com")
async def test_hyperlinked_fields_are_served_with_the_configured_base_url(application):
    world = await db(make_board)()
    channel = _channel("LinkedChannel", HyperlinkedBoardSerializer())
    tree = await _served(channel, world["board"], world["token"])
    request = APIRequestFactory().get("/", HTTP_HOST="api.example.com", secure=True)

    def want() -> Any:
        board = Board.objects.get(pk=world["board"].pk)
        data = HyperlinkedBoardSerializer(board, context={"request": request}).data
        return _codec.decode(_codec.encode(data))

    assert tree == await db(want)()
    assert tree["url"] == f"https://api.example.com/api/boards/{world['board'].pk}/"


class OpenCardSerializer(serializers.ModelSerializer):
    class Meta:
        model = Card
        fields = ["id", "title", "done"]


class BoardOpenCardsSerializer(serializers.ModelSerializer):
    open_cards = OpenCardSerializer(many=True)

    class Meta:
        model = Board
        fields = ["id", "name", "open_cards"]


def _set_done(pk: int, done: bool) -> None:
    card = Card.objects.get(pk=pk)
    card.done = done
    card.save()


async def test_a_related_property_holds_exactly_what_its_body_returns(application):
    """``open_cards`` filters ``done=False``: cards leave and enter the list as their
    ``done`` changes (by save and by ``update()``), at connect and after changes."""
    world = await db(make_board)()
    board = world["board"]
    channel = _channel("OpenCardsChannel", BoardOpenCardsSerializer())
    router = URLRouter([path("open/<int:board_id>/", channel.as_asgi())])

    def want() -> Any:
        return expected_state(BoardOpenCardsSerializer, Board.objects.get(pk=board.pk))

    await db(_set_done)(world["first"].pk, True)  # filtered out before anyone connects
    client = await connect(router, f"/open/{board.pk}/", world["token"], channel=channel)
    try:
        assert client.state.tree() == await db(want)()
        assert world["first"].pk not in [c["id"] for c in client.state.tree()["open_cards"]]
        changes = [
            lambda: _set_done(world["first"].pk, False),  # enters
            lambda: Card.objects.filter(pk=world["special"].pk).update(done=True),  # leaves
            lambda: Card.objects.create(board=board, title="new and open"),  # created inside
            lambda: Card.objects.create(board=board, title="new and done", done=True),
        ]
        for change in changes:
            await db(change)()
            await converges(receive(client), client.state, want)
    finally:
        await client.disconnect()
        _unregister(channel)


# -- the patterns that already worked keep working ---------------------------------------


class GadgetAllSerializer(serializers.ModelSerializer):
    status_label = serializers.CharField(source="get_status_display", read_only=True)

    class Meta:
        model = Gadget
        fields = "__all__"  # UUID key, choices, Decimal, DateTime, JSON, File, the FK


class GadgetExcludeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Gadget
        exclude = ["specs", "manual"]


class UsedGadgetSerializer(serializers.ModelSerializer):
    class Meta:
        model = UsedGadget  # a proxy
        fields = ["id", "status", "price"]


class GadgetDepthSerializer(serializers.ModelSerializer):
    class Meta:
        model = Gadget
        fields = ["id", "status", "board"]
        depth = 1  # one relation


class MemberSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username"]


def _board_of(name: str, field: serializers.Field) -> type[serializers.ModelSerializer]:
    """A board serializer nesting its gadgets (``source="gadgets"``) or members as
    ``field``, named ``things``."""
    meta = type("Meta", (), {"model": Board, "fields": ["id", "name", "things"]})
    return type(name, (serializers.ModelSerializer,), {"things": field, "Meta": meta})


WORKING = {
    "fields __all__, choices display, UUID key, JSON, Decimal, DateTime, File": _board_of(
        "BoardAll", GadgetAllSerializer(many=True, source="gadgets")
    ),
    "exclude": _board_of("BoardExclude", GadgetExcludeSerializer(many=True, source="gadgets")),
    "proxy model": _board_of("BoardProxy", UsedGadgetSerializer(many=True, source="gadgets")),
    "depth 1, one relation": _board_of(
        "BoardDepthOne", GadgetDepthSerializer(many=True, source="gadgets")
    ),
    "many-to-many through a model": _board_of(
        "BoardMembers", MemberSerializer(many=True, source="members")
    ),
}


def _gadget_changes(world: dict) -> list[Callable[[], Any]]:
    board, helper = world["board"], world["helper"]

    def use() -> None:
        gadget = Gadget.objects.get(board=board, status="new")
        gadget.status, gadget.price, gadget.specs = "used", "12.50", {"colour": ["red"]}
        gadget.save()

    return [
        use,
        lambda: Gadget.objects.create(board=board, status="new", specs={"n": 2}),
        lambda: Membership.objects.create(board=board, user=helper, role="editor"),
        lambda: Board.objects.filter(pk=board.pk).update(name="renamed board"),
        lambda: _sql(f"DELETE FROM {_table(Membership)} WHERE user_id = %s", [helper.pk]),
    ]


@pytest.mark.parametrize("serializer_class", WORKING.values(), ids=WORKING.keys())
async def test_the_patterns_that_worked_keep_serving_the_serializer_output(
    application, serializer_class
):
    world = await db(make_board)()
    board = world["board"]
    await db(lambda: Gadget.objects.create(board=board, status="new", manual="manuals/a.pdf"))()
    await db(lambda: Membership.objects.create(board=board, user=world["owner"]))()
    channel = _channel(f"{serializer_class.__name__}Channel", serializer_class())
    await db(install_capture)()  # as `migrate` does once a project declares the channel
    router = URLRouter([path("working/<int:board_id>/", channel.as_asgi())])

    def want() -> Any:
        return expected_state(serializer_class, Board.objects.get(pk=board.pk))

    client = await connect(router, f"/working/{board.pk}/", world["token"], channel=channel)
    try:
        assert client.state.tree() == await db(want)()
        for change in _gadget_changes(world):
            await db(change)()
            await converges(receive(client), client.state, want)
    finally:
        await client.disconnect()
        _unregister(channel)


# -- what startup refuses, by name ----------------------------------------------------------


class BoardWithRemarksSerializer(serializers.ModelSerializer):
    class RemarkSerializer(serializers.ModelSerializer):
        class Meta:
            model = Remark
            fields = ["id", "text"]

    remarks = RemarkSerializer(many=True)

    class Meta:
        model = Board
        fields = ["id", "remarks"]


class OverridingBoardSerializer(serializers.ModelSerializer):
    cards = CardSerializer(many=True)

    class Meta:
        model = Board
        fields = ["id", "cards"]

    def to_representation(self, instance: Board) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["card_count"] = len(data["cards"])
        return data


REFUSED = {
    "a nested GenericRelation": (
        BoardWithRemarksSerializer,
        r"BoardWithRemarksSerializer\.remarks: Board\.remarks is a GenericRelation",
    ),
    "a hyperlinked field without RX_BASE_URL": (
        HyperlinkedBoardSerializer,
        r"HyperlinkedBoardSerializer\.url is a hyperlinked field.*RX_BASE_URL",
    ),
    "to_representation over nested fields": (
        OverridingBoardSerializer,
        r"OverridingBoardSerializer overrides to_representation.*\(cards\)",
    ),
}


@pytest.mark.parametrize("serializer_class, message", REFUSED.values(), ids=REFUSED.keys())
def test_startup_refuses_what_it_cannot_serve_and_names_the_field(serializer_class, message):
    with pytest.raises(ChannelDeclarationError, match=message):
        _channel("Refused", serializer_class())


# -- method fields that read outside their subtree -----------------------------------------


class UndeclaredReadsSerializer(serializers.ModelSerializer):
    cards = CardSerializer(many=True)
    done_count = serializers.SerializerMethodField()  # its subtree: tracked by default
    note_count = serializers.SerializerMethodField()  # the notes: not in the state
    owner_name = serializers.SerializerMethodField()  # a forward relation, not nested
    tag_total = serializers.SerializerMethodField()  # a query of another model
    declared = serializers.SerializerMethodField()  # reads the notes, and says so

    class Meta:
        model = Board
        fields = ["id", "cards", "done_count", "note_count", "owner_name", "tag_total", "declared"]

    def get_done_count(self, board: Board) -> int:
        return sum(1 for card in board.cards.all() if card.done)

    def get_note_count(self, board: Board) -> int:
        return board.notes.count()

    def get_owner_name(self, board: Board) -> str:
        return board.owner.username

    def get_tag_total(self, board: Board) -> int:
        return Tag.objects.count()

    @depends_on("notes")
    def get_declared(self, board: Board) -> int:
        return board.notes.count()


def test_a_system_check_names_method_fields_that_read_outside_their_subtree():
    """What the source shows is reported (rxdjango.W004), by field and by what it reads;
    subtree reads and declared reads are not."""
    channel = _channel("UndeclaredReadsChannel", UndeclaredReadsSerializer())
    try:
        reported = {
            message.msg.split(" reads ")[0].rsplit(".", 1)[-1]: message.msg
            for message in run_checks(tags=["rxdjango"])
            if message.id == "rxdjango.W004"
        }
    finally:
        _unregister(channel)
    assert set(reported) == {"note_count", "owner_name", "tag_total"}, reported
    assert "board.notes" in reported["note_count"]
    assert "board.owner" in reported["owner_name"]
    assert "Tag.objects" in reported["tag_total"]
    assert all(msg.startswith("test_serializer_patterns.") for msg in reported.values())
