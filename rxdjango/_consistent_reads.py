"""Reads that see the database at one moment.

An anchor is read in several queries: one per layer of its serializer tree,
plus the lists of child ids. Under Django's default READ COMMITTED each query
sees what was committed when *it* ran, so a change committed between two of
them leaves a parent whose list names a child that the next query no longer
finds (or finds under another parent). Nothing would ever repair that: the
change's own propagation cannot find the parent through a record that was
never loaded.

Every read of the library that takes more than one query (loading an anchor,
reloading it, propagating a change) therefore runs inside
:func:`consistent_reads`, one transaction whose snapshot is taken at its first
query. The backends journal every change committed after the journal was
opened and replay it once the read lands, so a loaded anchor is one moment of
the database plus every change committed after it.

* PostgreSQL: ``REPEATABLE READ`` (a snapshot from the first statement; a
  read-only transaction at this level never fails with a serialization error).
  The level is set on the psycopg connection, so it costs no extra statement.
* SQLite: a transaction of its own, begun ``DEFERRED`` whatever the database's
  ``transaction_mode`` (with ``IMMEDIATE``, recommended for writers, a read
  would otherwise hold the write lock). In WAL mode it reads one snapshot and
  writers go on; in the default rollback-journal mode its shared lock makes
  writers wait until it ends (their ``timeout`` applies), which is just as
  consistent.
* Other databases: a transaction at the connection's own level (MySQL's
  default, ``REPEATABLE READ``, reads a snapshot).

Inside an enclosing atomic block there is no new snapshot to take: the read
sees what that transaction sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections, models, router, transaction

__all__ = ["consistent_reads"]


@contextmanager
def consistent_reads(model: type[models.Model]) -> Iterator[None]:
    """Run the block's queries on ``model``'s database against one snapshot."""
    using = router.db_for_read(model)
    connection = connections[using]
    if connection.in_atomic_block:
        yield
        return
    if connection.vendor == "sqlite":
        with _deferred(connection), transaction.atomic(using=using):
            yield
        return
    if connection.vendor != "postgresql":
        with transaction.atomic(using=using):
            yield
        return
    connection.ensure_connection()
    raw = connection.connection
    previous = raw.isolation_level
    raw.isolation_level = _repeatable_read()
    try:
        with transaction.atomic(using=using):
            yield
    finally:
        if not raw.closed:
            raw.isolation_level = previous


@contextmanager
def _deferred(connection: Any) -> Iterator[None]:
    """Begin the next transaction of an SQLite connection as a plain read (``BEGIN
    DEFERRED``): Django reads ``transaction_mode`` when the block begins."""
    connection.ensure_connection()
    previous = connection.transaction_mode
    connection.transaction_mode = "DEFERRED"
    try:
        yield
    finally:
        connection.transaction_mode = previous


def _repeatable_read() -> object:
    # Django's alias holds the right values for psycopg 3 and psycopg2 alike.
    from django.db.backends.postgresql.psycopg_any import IsolationLevel

    return IsolationLevel.REPEATABLE_READ
