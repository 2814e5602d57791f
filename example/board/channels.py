"""The example's channels: one board live, and the list of the user's boards."""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import transaction

from rxdjango.actions import action
from rxdjango.channels import ContextChannel
from rxdjango.consumers import consumer
from rxdjango.exceptions import ActionError, ForbiddenError, WriteError
from rxdjango.operations import CREATE, DELETE, SAVE

from .models import Board, Card, Column
from .serializers import (
    BoardSerializer,
    BoardSummarySerializer,
    CardSerializer,
    ColumnSerializer,
    CommentSerializer,
    NoteSerializer,
)


def boards_group(user_id: int) -> str:
    """The channel-layer group of one user's board lists (told when they join a board)."""
    return f"boards-of-{user_id}"


class BoardChannel(ContextChannel):
    """A board with its columns, cards and comments; notes are private to their owner."""

    class Meta:
        state = BoardSerializer()
        writable = {
            ColumnSerializer: [CREATE],
            CardSerializer: [SAVE, CREATE],
            CommentSerializer: [CREATE, DELETE],
            NoteSerializer: [CREATE, SAVE, DELETE],
        }

    class RuntimeState(TypedDict):
        viewers: int

    @staticmethod
    def has_permission(user, board_id):
        # A missing board and another team's board get the same refusal (403): the page
        # says "not found" for both, and nobody learns which board ids exist.
        return Board.objects.filter(pk=board_id, members=user).exists()

    # A refused write is rolled back on the page; the message raised here is what it shows.

    def can_save(self, instance, data):
        _check_title(data)
        return True

    def can_create(self, model_class, parent, data):
        _check_title(data)
        return True

    def can_delete(self, instance):
        if getattr(instance, "author_id", self.user.pk) != self.user.pk:
            raise ForbiddenError("You can only delete your own comments.")
        return True

    # -- presence: `viewers` counts the connections open on this board, in every process --
    # A join is one group event; only the newcomer hears the answers (on its own group),
    # so each join or leave costs every other connection one event, not one per viewer.

    async def on_connect(self, tstamp):
        board_id = self.kwargs["board_id"]
        self.presence_id = uuid.uuid4().hex
        self.present = {self.presence_id}
        await self.group_add(self._group)
        await self.group_add(self._personal_group)  # before joining: answers come here
        await self._tell(self._group, "presence.joined", reply_to=self._personal_group)
        self.set_runtime_var("viewers", 1)
        self.broadcast_notification(board_id, {"kind": "joined", "user": self.user.username})

    async def on_disconnect(self):
        await self._tell(self._group, "presence.left")

    @property
    def _group(self) -> str:
        return f"board-{self.kwargs['board_id']}"

    @property
    def _personal_group(self) -> str:
        return f"{self._group}-{self.presence_id}"

    async def _tell(self, group: str, event_type: str, **extra: str) -> None:
        await get_channel_layer().group_send(
            group, {"type": event_type, "presence": self.presence_id, **extra}
        )

    @consumer("presence.joined")
    async def someone_joined(self, event):
        if event["presence"] != self.presence_id:
            # Only the newcomer needs to count us: answer it alone.
            # (an older process's event has no reply_to: answer the whole board)
            await self._tell(event.get("reply_to", self._group), "presence.here")
        self._count(event["presence"], present=True)

    @consumer("presence.here")
    async def someone_is_here(self, event):
        self._count(event["presence"], present=True)

    @consumer("presence.left")
    async def someone_left(self, event):
        self._count(event["presence"], present=False)

    def _count(self, presence: str, present: bool) -> None:
        if present:
            self.present.add(presence)
        else:
            self.present.discard(presence)
        self.set_runtime_var("viewers", len(self.present))

    @action
    async def move_card(self, card_id: int, column_id: int, position: int) -> None:
        """Move a card to a column of this board, at ``position`` (0 = top)."""
        await database_sync_to_async(_move_card)(
            self.kwargs["board_id"], card_id, column_id, position
        )

    @action
    async def archive_column(self, column_id: int) -> bool:
        updated = await database_sync_to_async(_archive)(self.kwargs["board_id"], column_id)
        if not updated:
            raise ActionError("no such column on this board", 404)
        return True

    @action
    async def add_member(self, username: str) -> str:
        """Add a user to this board (its owner only). The board appears in their list at
        once; its members line updates for everyone on the board by itself (m2m change)."""
        board_id = self.kwargs["board_id"]
        member_id, name = await database_sync_to_async(_add_member)(
            board_id, self.user.pk, username
        )
        await get_channel_layer().group_send(
            boards_group(member_id), {"type": "boards.joined", "board": board_id}
        )
        return name


def _check_title(data: dict[str, Any]) -> None:
    """Titles are for reading, not shouting: refuse one in capitals, saying why."""
    title = data.get("title")
    if isinstance(title, str) and title.isupper():
        raise WriteError("Titles in capitals are not allowed: please don't shout.")


def _add_member(board_id: int, owner_id: int, username: str) -> tuple[int, str]:
    with transaction.atomic():
        board = Board.objects.select_for_update().filter(pk=board_id).first()
        if board is None:
            raise ActionError("There is no such board.", 404)
        if board.owner_id != owner_id:
            raise ActionError("Only the board's owner can add members.", 403)
        member = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
        if member is None:
            raise ActionError(f"There is no user called '{username.strip()}'.", 404)
        if board.members.filter(pk=member.pk).exists():
            raise ActionError(f"{member.username} is already a member of this board.")
        board.members.add(member)
        return member.pk, member.username


def _move_card(board_id: int, card_id: int, column_id: int, position: int) -> None:
    """Move a card, renumbering both columns 0..n-1: positions stay dense, so any
    ``position`` the client sends is clamped and nothing can overflow."""
    with transaction.atomic():
        # Moves on a board take its row first: they serialize, and cannot deadlock on
        # each other's cards when crossing columns in opposite directions.
        Board.objects.select_for_update().filter(pk=board_id).first()
        card = (
            Card.objects.select_for_update().filter(pk=card_id, column__board_id=board_id).first()
        )
        column = Column.objects.filter(pk=column_id, board_id=board_id).first()
        if card is None or column is None:
            raise ActionError("no such card or column on this board", 404)
        source_id = card.column_id
        cards = _column_cards(column.pk, without=card)
        cards.insert(min(max(position, 0), len(cards)), card)
        card.column = column
        _renumber(cards, moved=card if source_id != column.pk else None)
        if source_id != column.pk:
            _renumber(_column_cards(source_id, without=card))


def _column_cards(column_id: int, without: Card) -> list[Card]:
    return list(
        Card.objects.select_for_update()
        .filter(column_id=column_id)
        .exclude(pk=without.pk)
        .order_by("position", "id")
    )


def _renumber(cards: list[Card], moved: Card | None = None) -> None:
    """Number ``cards`` 0..n-1 in order, saving (so signals fire) only those that changed;
    ``moved`` changed column, so it is saved even if its number is the same."""
    for index, card in enumerate(cards):
        if card.position != index or card is moved:
            card.position = index
            card.save(update_fields=["column", "position"])


def _archive(board_id: int, column_id: int) -> bool:
    column = Column.objects.filter(pk=column_id, board_id=board_id).first()
    if column is None:
        return False
    column.archived = True
    column.save()
    return True


class MyBoardsChannel(ContextChannel):
    """The boards the user is a member of; a new board appears when it is created."""

    class Meta:
        state = BoardSummarySerializer(many=True)
        auto_update = True

    @staticmethod
    def has_permission(user):
        """Anyone logged in: the list holds only the user's own boards (list_instances)."""
        return True

    def list_instances(self):
        return Board.objects.filter(members=self.user).order_by("id")

    def is_visible(self, instance_id):
        return Board.objects.filter(pk=instance_id, members=self.user).exists()

    async def on_connect(self, tstamp):
        await self.group_add(boards_group(self.user.pk))

    @consumer("boards.joined")
    async def joined_board(self, event):
        """Added to an existing board (auto_update only sees new boards): list it."""
        if await database_sync_to_async(self.is_visible)(event["board"]):
            await self.add_instance(event["board"], at_beginning=True)

    @action
    async def create_board(self, name: str) -> int:
        """Create a board owned by the user, its first member; returns its id. It joins
        the user's lists through auto_update, like a board created anywhere else."""
        return await database_sync_to_async(_create_board)(self.user.pk, name)


def _create_board(user_id: int, name: str) -> int:
    name = name.strip()
    limit = Board._meta.get_field("name").max_length
    if not name:
        raise ActionError("A board needs a name.")
    if len(name) > limit:
        raise ActionError(f"A board name has at most {limit} characters.")
    with transaction.atomic():  # is_visible must see the membership when the board commits
        board = Board.objects.create(name=name, owner_id=user_id)
        board.members.add(user_id)
    return board.pk
