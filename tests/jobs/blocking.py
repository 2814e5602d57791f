"""Test hooks for server subprocesses, driven by files the test creates and removes."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from django.db.backends.signals import connection_created


def block_task_reads_while(path: str, in_relay: bool = False) -> None:
    """While ``path`` exists, reads of tasks wait: a load's (``in_relay`` False) or the
    change relay's, which reads holding the anchor's lock (``in_relay`` True)."""

    def wait_while_blocked(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        relaying = threading.current_thread().name.startswith("rxdjango-relay")
        reads_tasks = '"jobs_task"' in sql and sql.lstrip().upper().startswith("SELECT")
        if reads_tasks and relaying == in_relay:
            while os.path.exists(path):
                time.sleep(0.02)
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(wait_while_blocked)

    connection_created.connect(install, weak=False)


def pause_loads_in(directory: str) -> None:
    """While ``directory/pause-after`` names a layer, a load that has read that layer
    writes ``directory/paused`` and waits until the first file is removed."""
    from rxdjango.testing import between_load_layers

    pause, paused = os.path.join(directory, "pause-after"), os.path.join(directory, "paused")

    def wait_while_asked(layer: str) -> None:
        try:
            with open(pause) as wanted:
                if wanted.read() != layer:
                    return
        except FileNotFoundError:
            return
        with open(paused, "w") as marker:
            marker.write(layer)
        while os.path.exists(pause):
            time.sleep(0.01)

    _hooks.enter_context(between_load_layers(wait_while_asked))


_hooks = contextlib.ExitStack()


def crash_before_relaying_while(path: str) -> None:
    """While ``path`` exists, this process dies (as if killed) when it reads the change
    log: after a commit, before the change is propagated and published."""

    def die_if_asked(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        reads_log = "rxdjango_captured_change" in sql and sql.lstrip().upper().startswith("SELECT")
        if reads_log and os.path.exists(path):
            os._exit(137)
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(die_if_asked)

    connection_created.connect(install, weak=False)


#: A save that sets a task's title to this waits at ``write_gate`` (in its database
#: thread) until the test opens it; ``at_write_gate`` is set while one waits there.
GATED_TITLE = "wait at the gate"
write_gate = threading.Event()
at_write_gate = threading.Event()


def wait_at_write_gate(data: Any) -> None:
    """Called by ``JobChannel.can_save``: hold a save of ``GATED_TITLE`` until the test
    opens the gate (tests of database work running concurrently)."""
    if data.get("title") != GATED_TITLE:
        return
    at_write_gate.set()
    if not write_gate.wait(timeout=60):
        raise RuntimeError("the write gate was never opened")
