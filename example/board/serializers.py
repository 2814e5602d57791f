from django.contrib.auth import get_user_model
from rest_framework import serializers

from .models import Board, Card, Column, Comment, Note


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username"]


class CommentSerializer(serializers.ModelSerializer):
    author = UserSerializer(read_only=True)

    class Meta:
        model = Comment
        fields = ["id", "text", "created", "author"]

    def create(self, validated_data):
        # The author is whoever writes: the connection's user (or the REST request's).
        channel = self.context.get("channel")
        request = self.context.get("request")
        validated_data["author"] = channel.user if channel is not None else request.user
        return super().create(validated_data)


class CardSerializer(serializers.ModelSerializer):
    assignee = UserSerializer(allow_null=True, required=False)
    comments = CommentSerializer(many=True, read_only=True)

    class Meta:
        model = Card
        fields = ["id", "title", "position", "assignee", "comments"]
        # Positions change only through the move_card action, which keeps them dense.
        read_only_fields = ["position"]

    def create(self, validated_data):
        # A card created from the page goes to the bottom of its column; positions are
        # dense (0..n-1), so that is the count. Take the board's row first, as move_card
        # does, so that a create and a move on the board do not interleave.
        column = validated_data["column"]
        Board.objects.select_for_update().filter(pk=column.board_id).first()
        validated_data["position"] = column.cards.count()
        return super().create(validated_data)


class ColumnSerializer(serializers.ModelSerializer):
    cards = CardSerializer(many=True, read_only=True)

    class Meta:
        model = Column
        fields = ["id", "title", "position", "archived", "cards"]
        read_only_fields = ["position"]

    def create(self, validated_data):
        # A column created from the page goes to the right of the others.
        validated_data["position"] = validated_data["board"].columns.count()
        return super().create(validated_data)


class NoteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "text", "owner"]
        read_only_fields = ["owner"]
        user_key = "owner"


class BoardSerializer(serializers.ModelSerializer):
    columns = ColumnSerializer(many=True, read_only=True)
    owner = UserSerializer(read_only=True)
    members = UserSerializer(many=True, read_only=True)
    notes = NoteSerializer(many=True, read_only=True)

    class Meta:
        model = Board
        fields = ["id", "name", "columns", "owner", "members", "notes"]


class BoardSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Board
        fields = ["id", "name"]
