"""Models for the serializer patterns real projects write (tests/test_serializer_patterns.py)."""

import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone

from rxdjango.relations import related_property


class Remark(models.Model):
    """Attached to anything through a generic foreign key."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    target = GenericForeignKey("content_type", "object_id")
    text = models.CharField(max_length=100)


class Board(models.Model):
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    remarks = GenericRelation(Remark)
    members: "models.ManyToManyField[models.Model, Membership]" = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="boards_joined"
    )

    @related_property("board")
    def open_cards(self) -> models.QuerySet:
        """A filter the state must honour: done cards are not in it."""
        return self.cards.filter(done=False)


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Card(models.Model):
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="cards")
    title = models.CharField(max_length=100)
    done = models.BooleanField(default=False)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    tags = models.ManyToManyField(Tag, blank=True)

    class Meta:
        ordering = ["id"]


class SpecialCard(Card):
    """Multi-table inheritance: its title lives in the card table."""

    showcase = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="showcased")
    priority = models.IntegerField(default=0)


class Note(models.Model):
    """Not in the board's state: a method field counts them (declared with depends_on)."""

    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="notes")
    text = models.CharField(max_length=100)


class Membership(models.Model):
    """A many-to-many link model with a field of its own."""

    board = models.ForeignKey(Board, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="member")


class Gadget(models.Model):
    """A UUID primary key and fields of many kinds."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="gadgets")
    status = models.CharField(max_length=10, choices=[("new", "New"), ("used", "Used")])
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    made = models.DateTimeField(default=timezone.now)
    specs = models.JSONField(default=dict)
    manual = models.FileField(upload_to="manuals/", blank=True)

    class Meta:
        ordering = ["made"]


class UsedGadget(Gadget):
    class Meta:
        proxy = True
