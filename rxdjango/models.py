"""The change log the database writes itself (see :mod:`rxdjango._capture`)."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now

__all__ = ["CapturedChange"]


class CapturedChange(models.Model):
    """One row a committed transaction inserted, updated or deleted in a table some
    channel reads, written by a trigger in that transaction; removed once propagated."""

    id = models.BigAutoField(primary_key=True)
    table_name = models.CharField(max_length=255)
    row_pk = models.TextField()
    #: "I" (the row was inserted), "D" (deleted), "U" (updated, or a row it points to)
    operation = models.CharField(max_length=1)
    #: set by the database (its clock) when the trigger wrote the row
    captured_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "rxdjango_captured_change"
