"""Writes made outside the serving processes, for the change-capture benchmarks.

Run by ``run.py`` in a subprocess on the benchmark database:

* ``relay <task> <first marker> <count> <pause ms>``: commits ``count`` renames of the
  task by raw SQL (no model signal), ``pause`` apart, printing one JSON line per commit:
  ``{"k": marker, "committed": wall-clock time right after the COMMIT}``;
* ``bulk <job> <marker>``: renames every task of the job in one ``QuerySet.update()``
  and prints ``{"k": marker, "committed": ..., "rows": n}``;
* ``rename_user <user> <marker>``: renames a user with ``save()``; prints
  ``{"k": marker, "committed": ...}``;
* ``overhead <task> <count>``: times ``count`` one-row ``save()`` calls with the capture
  triggers installed and as many with them dropped, in alternating blocks; prints
  ``{"with": [...], "without": [...]}``;
* ``saves <first marker> <seconds> <pause ms> <task>...``: renames the tasks in turn with
  ``save()`` for ``seconds`` (``pause`` apart; 0: one after another), as a task
  worker or a management command would (the servers relay them); one JSON line per
  commit, like ``relay``, with the task's id;
* ``bulks <job> <seconds> <pause ms>``: ``bulk`` again and again for ``seconds``,
  ``pause`` apart (an anchor whose every change is slow to propagate); prints how
  many it has committed after each;
* ``drained <timeout>``: waits until the change log is empty.
"""

from __future__ import annotations

import json
import sys
import time

import django


def relay(task: int, first: int, count: int, pause_ms: int) -> None:
    from django.db import connection, transaction

    from jobs.models import Task

    table = connection.ops.quote_name(Task._meta.db_table)
    for k in range(first, first + count):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET title = %s WHERE id = %s", [f"bench-{k}", task])
        print(json.dumps({"k": k, "committed": time.time()}), flush=True)
        time.sleep(pause_ms / 1000)


def saves(first: int, seconds: int, pause_ms: int, *tasks: int) -> None:
    from jobs.models import Task

    rows = [Task.objects.get(pk=pk) for pk in tasks]
    end = time.monotonic() + seconds
    k = first
    while time.monotonic() < end:
        row = rows[k % len(rows)]
        row.title = f"bench-{k}"
        row.save()
        print(json.dumps({"k": k, "committed": time.time(), "task": row.pk}), flush=True)
        k += 1
        if pause_ms:
            time.sleep(pause_ms / 1000)


def bulk(job: int, k: int) -> None:
    from django.db import transaction

    from jobs.models import Task

    with transaction.atomic():
        rows = Task.objects.filter(job_id=job).update(title=f"bench-{k}")
    print(json.dumps({"k": k, "committed": time.time(), "rows": rows}), flush=True)


def bulks(job: int, seconds: int, pause_ms: int) -> None:
    from django.db import transaction

    from jobs.models import Task

    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        with transaction.atomic():
            Task.objects.filter(job_id=job).update(title=f"slow-{count}")
        count += 1
        print(json.dumps({"updates": count}), flush=True)
        time.sleep(pause_ms / 1000)


def rename_user(user: int, k: int) -> None:
    from django.contrib.auth import get_user_model

    row = get_user_model().objects.get(pk=user)
    row.username = f"bench-{k}"
    row.save()
    print(json.dumps({"k": k, "committed": time.time()}), flush=True)


def overhead(task: int, count: int) -> None:
    from django.db import connection

    from rxdjango import _capture

    from jobs.models import Task

    row = Task.objects.get(pk=task)
    watched = _capture.watched_tables()
    times: dict[str, list[float]] = {"with": [], "without": []}

    def saves(arm: str, n: int) -> None:
        for i in range(n):
            row.title = f"overhead {arm} {i}"
            started = time.perf_counter()
            row.save()
            times[arm].append(time.perf_counter() - started)

    # Blocks alternate (with, without, without, with, ...) so that neither arm is
    # always the first on a warm cache.
    block = max(1, count // 10)
    try:
        for round_ in range(10):
            for arm in ("with", "without") if round_ % 2 == 0 else ("without", "with"):
                _capture.install_triggers(connection, watched if arm == "with" else [])
                saves(arm, block)
    finally:
        _capture.install_triggers(connection, watched)
    print(json.dumps(times))


def drained(timeout: int) -> None:
    """Wait until the change log is empty (the relay has propagated everything written
    before, such as the benchmark's own world); print how long that took."""
    from rxdjango.models import CapturedChange

    started = time.monotonic()
    while CapturedChange.objects.exists():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"change log not drained after {timeout} s")
        time.sleep(0.2)
    print(json.dumps({"waited": time.monotonic() - started}))


def main() -> None:
    django.setup()
    command, *args = sys.argv[1:]
    if command == "relay":
        relay(*(int(a) for a in args))
    elif command == "bulk":
        bulk(*(int(a) for a in args))
    elif command == "rename_user":
        rename_user(*(int(a) for a in args))
    elif command == "bulks":
        bulks(*(int(a) for a in args))
    elif command == "saves":
        saves(*(int(a) for a in args))
    elif command == "drained":
        drained(*(int(a) for a in args))
    else:
        overhead(*(int(a) for a in args))


if __name__ == "__main__":
    main()
