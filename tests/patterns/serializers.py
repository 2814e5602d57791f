from rest_framework import serializers

from rxdjango.decorators import depends_on

from .models import Board, Card, SpecialCard


class CardSerializer(serializers.ModelSerializer):
    # Values read from rows outside the tree: another model's field, related slugs.
    assignee_name = serializers.CharField(source="assignee.username", read_only=True)
    tag_names = serializers.SlugRelatedField(
        source="tags", many=True, read_only=True, slug_field="name"
    )

    class Meta:
        model = Card
        fields = ["id", "title", "done", "assignee_name", "tag_names"]


class SpecialCardSerializer(serializers.ModelSerializer):
    class Meta:
        model = SpecialCard
        fields = ["id", "title", "priority"]


class BoardSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(read_only=True, slug_field="username")
    cards = CardSerializer(many=True)
    showcased = SpecialCardSerializer(many=True)
    # Reads the subtree (tracked by default).
    done_count = serializers.SerializerMethodField()
    # Reads rows outside the tree (declared).
    note_count = serializers.SerializerMethodField()

    class Meta:
        model = Board
        fields = ["id", "name", "owner", "cards", "showcased", "done_count", "note_count"]

    def get_done_count(self, board: Board) -> int:
        return sum(1 for card in board.cards.all() if card.done)

    @depends_on("notes")
    def get_note_count(self, board: Board) -> int:
        return board.notes.count()
