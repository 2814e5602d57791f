"""Counting a propagation's queries leaves the project's own query wrappers alone."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from rxdjango import _metrics

from jobs.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_counted_block_that_opens_the_connection_keeps_the_wrappers_added_then():
    """The block opens its thread's connection; a ``connection_created`` receiver (a
    project's query logging or tracing) adds a wrapper then: it stays after the block,
    and the block's counter does not (queries after it are not counted)."""
    logged: list[str] = []

    def log(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        logged.append(sql)
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(log)

    counted: list[int] = []
    failures: list[BaseException] = []

    def fresh_thread() -> None:
        try:
            before = _metrics.snapshot()["queries"]
            with _metrics.counting_queries():
                Task.objects.count()  # opens this thread's connection
            counted.append(_metrics.snapshot()["queries"] - before)
            Task.objects.count()
            Task.objects.exists()
            counted.append(_metrics.snapshot()["queries"] - before)
        except BaseException as failure:
            failures.append(failure)
        finally:
            connections.close_all()

    connection_created.connect(install)
    try:
        thread = threading.Thread(target=fresh_thread)
        thread.start()
        thread.join()
    finally:
        connection_created.disconnect(install)
    assert not failures
    assert len([sql for sql in logged if "jobs_task" in sql]) == 3
    assert counted == [1, 1]
