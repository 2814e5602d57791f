"""Change capture in the database: triggers write the change log in the writing transaction.

For every table some channel's state reads (M2M through tables included), a trigger
records each inserted, updated or deleted row in ``rxdjango_captured_change`` (the
:class:`~rxdjango.models.CapturedChange` model), inside the transaction that made
the change: a log row exists if and only if its change committed, whatever wrote it
(``save()``, ``QuerySet.update()``, ``bulk_create()``, raw SQL, another process or
service, an operator in ``psql``). The relay (:mod:`rxdjango._relay`) turns the log
into propagations.

What a trigger records, as (table, primary key) pairs:

* the row itself (its primary key): the propagator finds the parents whose lists
  change (the old ones through the cache, the new ones through the row);
* for a many-to-many through table: the two rows each link joins.

Triggers are (re)installed after every ``migrate`` (``post_migrate``), so a table
rebuilt by a migration (SQLite rebuilds tables to alter them) is captured again, and
a column added to a tracked table changes nothing. Supported: SQLite and PostgreSQL;
other databases keep the signal path only (system check ``rxdjango.W003``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from . import _registry
from .conf import rx_settings

__all__ = [
    "CAPTURE_VENDORS",
    "LOG_TABLE",
    "NOTIFY_CHANNEL",
    "Watched",
    "capturing",
    "install_triggers",
    "missing_triggers",
    "supports_capture",
    "watched_tables",
]

LOG_TABLE = "rxdjango_captured_change"
#: The PostgreSQL ``NOTIFY`` channel the triggers signal (payload empty).
NOTIFY_CHANNEL = "rxdjango_capture"
CAPTURE_VENDORS = frozenset({"sqlite", "postgresql"})
_PREFIX = "rxdjango_capture"


@dataclass(frozen=True)
class Watched:
    """One tracked table and the (column, table, role) its trigger records: role "row"
    for the row's own primary key, "ref" for a row it points to."""

    table: str
    pairs: tuple[tuple[str, str, str], ...]


def supports_capture(connection: BaseDatabaseWrapper) -> bool:
    return connection.vendor in CAPTURE_VENDORS


_capturing: dict[str, bool] = {}


def capturing(using: str) -> bool:
    """Whether ``using`` captures changes: ``RX_CAPTURE`` on, a supported database, and
    the log table migrated (looked up once per database and process)."""
    if not rx_settings.RX_CAPTURE:
        return False
    known = _capturing.get(using)
    if known is None:
        connection = connections[using]
        known = supports_capture(connection) and (
            LOG_TABLE in connection.introspection.table_names()
        )
        _capturing[using] = known
    return known


def forget_capturing() -> None:
    """Look the databases up again (tests switch databases and settings)."""
    _capturing.clear()


def watched_tables(tracked: Iterable[type[models.Model]] | None = None) -> list[Watched]:
    """The tables to capture, from the models registered channels read."""
    models_ = set(_registry.tracked_models() if tracked is None else tracked)
    links = _registry.link_models()
    tables = {model._meta.db_table for model in models_}
    watched = []
    for model in sorted(models_, key=lambda m: m._meta.db_table):
        meta = model._meta
        pairs: list[tuple[str, str, str]] = []
        if not meta.auto_created:
            pairs.append((meta.pk.column, meta.db_table, "row"))
        if meta.auto_created or model in links:  # a many-to-many link: the rows it joins
            for field in meta.concrete_fields:
                target = field.related_model if field.many_to_one else None
                if isinstance(target, type) and target._meta.db_table in tables:
                    pairs.append((field.column, target._meta.db_table, "ref"))
        if pairs:
            watched.append(Watched(meta.db_table, tuple(dict.fromkeys(pairs))))
    return watched


def install_triggers(connection: BaseDatabaseWrapper, watched: list[Watched]) -> None:
    """(Re)create the capture triggers of ``watched`` and drop those of tables no longer
    watched (idempotent)."""
    if connection.vendor == "postgresql":
        statements = _postgresql(connection, watched)
    elif connection.vendor == "sqlite":
        statements = _sqlite(connection, watched)
    else:
        return
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def missing_triggers(connection: BaseDatabaseWrapper, watched: list[Watched]) -> list[str]:
    """The watched tables that have no capture trigger (a channel deployed without
    running ``migrate``): their changes reach clients through signals only."""
    if not supports_capture(connection):
        return []
    installed = {table for _, table in _installed(connection)}
    return sorted(item.table for item in watched if item.table not in installed)


def _installed(connection: BaseDatabaseWrapper) -> set[tuple[str, str]]:
    """(trigger name, table) of the capture triggers in the database."""
    if connection.vendor == "postgresql":
        query = (
            "SELECT trigger_name, event_object_table FROM information_schema.triggers "
            "WHERE trigger_name = %s AND trigger_schema = current_schema()"
        )
        pattern = _PREFIX
    else:
        query = "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE %s"
        pattern = f"{_PREFIX}%"
    with connection.cursor() as cursor:
        cursor.execute(query, [pattern])
        return {(row[0], row[1]) for row in cursor.fetchall()}


# -- PostgreSQL ----------------------------------------------------------------------------


def _postgresql(connection: BaseDatabaseWrapper, watched: list[Watched]) -> list[str]:
    """One trigger function per table, reading its columns from ``NEW`` / ``OLD`` by name:
    no conversion of the whole row (a row with a large JSON column costs the same as a
    small one) and one ``INSERT`` per change."""
    quote = connection.ops.quote_name
    statements = []
    wanted = {item.table: _pg_function_name(item.table) for item in watched}
    installed = {table for _, table in _installed(connection)}
    for table in installed - set(wanted):
        statements.append(f"DROP TRIGGER IF EXISTS {_PREFIX} ON {quote(table)}")
    for item in watched:
        function = quote(wanted[item.table])
        statements.append(_pg_function(quote, function, item))
        statements.append(f"DROP TRIGGER IF EXISTS {_PREFIX} ON {quote(item.table)}")
        statements.append(
            f"CREATE TRIGGER {_PREFIX} AFTER INSERT OR UPDATE OR DELETE ON "
            f"{quote(item.table)} FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
    with connection.cursor() as cursor:  # functions of tables no longer watched
        cursor.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND (p.proname = %s OR p.proname LIKE %s)",
            [_PREFIX, f"{_PREFIX}\\_%"],
        )
        stale = {row[0] for row in cursor.fetchall()} - set(wanted.values())
    statements.extend(f"DROP FUNCTION IF EXISTS {quote(name)}() CASCADE" for name in sorted(stale))
    return statements


def _pg_function_name(table: str) -> str:
    """``rxdjango_capture_<table>``, shortened with a digest of the table's name where
    it would pass PostgreSQL's 63-byte identifier limit."""
    name = f"{_PREFIX}_{table}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(table.encode()).hexdigest()[:10]
    return f"{name.encode()[:52].decode(errors='ignore')}_{digest}"


def _pg_function(quote: Any, function: str, item: Watched) -> str:
    """The body: for an insert the new values, for a delete the old ones, for an update
    the new values and every old one that differs (a row moved away from a parent)."""
    inserts, deletes, updates = [], [], []
    for column, table, role in item.pairs:
        column = quote(column)
        literal = _pg_literal(table)
        if role == "row":
            inserts.append(f"({literal}, NEW.{column}::text, 'I')")
            deletes.append(f"({literal}, OLD.{column}::text, 'D')")
            updates.append(f"({literal}, NEW.{column}::text, 'U')")
            updates.append(
                f"({literal}, CASE WHEN OLD.{column} IS DISTINCT FROM NEW.{column} "
                f"THEN OLD.{column}::text END, 'U')"
            )
        else:
            inserts.append(f"({literal}, NEW.{column}::text, 'U')")
            deletes.append(f"({literal}, OLD.{column}::text, 'U')")
            updates.append(f"({literal}, NEW.{column}::text, 'U')")
            updates.append(
                f"({literal}, CASE WHEN OLD.{column} IS DISTINCT FROM NEW.{column} "
                f"THEN OLD.{column}::text END, 'U')"
            )

    def insert(rows: list[str]) -> str:
        return (
            f"INSERT INTO {LOG_TABLE} (table_name, row_pk, operation) "
            f"SELECT t, v, o FROM (VALUES {', '.join(rows)}) AS c(t, v, o) "
            "WHERE v IS NOT NULL;"
        )

    return (
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        f"  IF TG_OP = 'INSERT' THEN {insert(inserts)}\n"
        f"  ELSIF TG_OP = 'DELETE' THEN {insert(deletes)}\n"
        f"  ELSE {insert(updates)}\n"
        "  END IF;\n"
        f"  PERFORM pg_notify('{NOTIFY_CHANNEL}', '');\n"
        "  RETURN NULL;\n"
        "END $$"
    )


def _pg_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# -- SQLite --------------------------------------------------------------------------------


def _sqlite(connection: BaseDatabaseWrapper, watched: list[Watched]) -> list[str]:
    quote = connection.ops.quote_name
    statements = []
    installed = {name for name, _ in _installed(connection)}
    wanted: dict[str, str] = {}
    for item in watched:
        for operation in ("insert", "update", "delete"):
            name = f"{_PREFIX}_{operation}_{item.table}"
            wanted[name] = _sqlite_trigger(quote, name, item, operation)
    for name in installed:
        statements.append(f"DROP TRIGGER IF EXISTS {quote(name)}")
    statements.extend(wanted.values())
    return statements


def _sqlite_trigger(quote: Any, name: str, item: Watched, operation: str) -> str:
    rows = []
    for column, table, role in item.pairs:
        literal = _pg_literal(table)
        op = _pg_literal(operation[0].upper() if role == "row" else "U")
        if operation in ("insert", "update"):
            rows.append(f"SELECT {literal} AS t, NEW.{quote(column)} AS v, {op} AS o")
        if operation == "delete":
            rows.append(f"SELECT {literal} AS t, OLD.{quote(column)} AS v, {op} AS o")
        if operation == "update":
            rows.append(
                f"SELECT {literal} AS t, OLD.{quote(column)} AS v, {op} AS o "
                f"WHERE OLD.{quote(column)} IS NOT NEW.{quote(column)}"
            )
    union = " UNION ALL ".join(rows)
    return (
        f"CREATE TRIGGER {quote(name)} AFTER {operation.upper()} ON {quote(item.table)} "
        f"BEGIN INSERT INTO {LOG_TABLE} (table_name, row_pk, operation) "
        f"SELECT t, CAST(v AS TEXT), o FROM ({union}) WHERE v IS NOT NULL; END"
    )
