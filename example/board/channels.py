"""The example's channels: one board live, and the list of the user's boards."""

from __future__ import annotations

import uuid
from typing import TypedDict

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from rxdjango.actions import action
from rxdjango.channels import ContextChannel
from rxdjango.consumers import consumer
from rxdjango.exceptions import ActionError
from rxdjango.operations import CREATE, DELETE, SAVE

from .models import Board, Card, Column
from .serializers import (
    BoardSerializer,
    BoardSummarySerializer,
    CardSerializer,
    CommentSerializer,
    NoteSerializer,
)


class BoardChannel(ContextChannel):
    """A board with its columns, cards and comments; notes are private to their owner."""

    class Meta:
        state = BoardSerializer()
        writable = {
            CardSerializer: [SAVE],
            CommentSerializer: [CREATE, DELETE],
            NoteSerializer: [CREATE, SAVE, DELETE],
        }

    class RuntimeState(TypedDict):
        viewers: int

    @staticmethod
    def has_permission(user, board_id):
        return Board.objects.filter(pk=board_id, members=user).exists()

    def can_save(self, instance, data):
        # A card title may not be emptied or shouted: a refused write is rolled back.
        title = data.get("title", "x")
        return bool(title.strip()) and not title.isupper()

    def can_create(self, model_class, parent, data):
        return True

    def can_delete(self, instance):
        author = getattr(instance, "author_id", self.user.pk)
        return author == self.user.pk  # only your own comments

    # -- presence: `viewers` counts the connections open on this board, in every process --

    async def on_connect(self, tstamp):
        board_id = self.kwargs["board_id"]
        self.presence_id = uuid.uuid4().hex
        self.present = {self.presence_id}
        await self.group_add(self._group)
        await self._tell("presence.joined")
        self.set_runtime_var("viewers", 1)
        self.broadcast_notification(board_id, {"kind": "joined", "user": self.user.username})

    async def on_disconnect(self):
        await self._tell("presence.left")

    @property
    def _group(self) -> str:
        return f"board-{self.kwargs['board_id']}"

    async def _tell(self, event_type: str) -> None:
        await get_channel_layer().group_send(
            self._group, {"type": event_type, "presence": self.presence_id}
        )

    @consumer("presence.joined")
    async def someone_joined(self, event):
        if event["presence"] != self.presence_id:
            await self._tell("presence.here")  # so the newcomer counts us too
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
            raise ActionError(404, "no such column on this board")
        return True


def _move_card(board_id: int, card_id: int, column_id: int, position: int) -> None:
    with transaction.atomic():
        card = (
            Card.objects.select_for_update().filter(pk=card_id, column__board_id=board_id).first()
        )
        column = Column.objects.filter(pk=column_id, board_id=board_id).first()
        if card is None or column is None:
            raise ActionError(404, "no such card or column on this board")
        Card.objects.filter(column=column, position__gte=position).exclude(pk=card.pk).update(
            position=F("position") + 1
        )
        card.column = column
        card.position = max(position, 0)
        card.save()
        for moved in Card.objects.filter(column=column).exclude(pk=card.pk):
            BoardChannel.broadcast_instance(board_id, moved)


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

    def list_instances(self):
        return Board.objects.filter(members=self.user).order_by("id")

    def is_visible(self, instance_id):
        return Board.objects.filter(pk=instance_id, members=self.user).exists()
