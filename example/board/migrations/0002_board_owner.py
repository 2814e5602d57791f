"""Boards get an owner; an existing board's owner is its first member."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def first_member_owns(apps, schema_editor):
    """Boards made before owners existed: the earliest member (by id) becomes the owner,
    so that someone can still add members to them."""
    Board = apps.get_model("board", "Board")
    for board in Board.objects.filter(owner=None):
        first = board.members.order_by("id").first()
        if first is not None:
            board.owner = first
            board.save(update_fields=["owner"])


class Migration(migrations.Migration):
    dependencies = [
        ("board", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="board",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="owned_boards",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(first_member_owns, migrations.RunPython.noop),
    ]
