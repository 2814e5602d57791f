"""A test hook that holds reads of the task table while a file exists."""

from __future__ import annotations

import os
import time
from typing import Any

from django.db.backends.signals import connection_created


def block_task_reads_while(path: str) -> None:
    def wait_while_blocked(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if '"jobs_task"' in sql and sql.lstrip().upper().startswith("SELECT"):
            while os.path.exists(path):
                time.sleep(0.02)
        return execute(sql, params, many, context)

    def install(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.execute_wrappers.append(wait_while_blocked)

    connection_created.connect(install, weak=False)
