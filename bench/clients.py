"""A benchmark client process: many WebSocket connections of one kind, on one event loop.

Started by ``run.py``. Prints ``{"ready": n}`` once every connection has its initial
state (or subscription), then answers commands read from stdin, one JSON per line:

* ``{"collect": k}``: wait until every connection has received a frame holding the
  marker ``bench-<k>`` and print ``{"k": k, "times": [...], "since_change": [...]}``:
  wall-clock receive times, and for RxDjango frames the time since the change's
  ``_tstamp`` (the server's clock right after the commit; same machine, same clock);
  With ``"rows": n``, a connection has the change once ``n`` records carry the
  marker (a ``QuerySet.update()`` of ``n`` rows), and its time is the last one's;
* ``{"quit": true}``: close everything and exit.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

import websockets

MARKER = re.compile(r"bench-(\d+)")
TSTAMP = re.compile(r'"_tstamp":([0-9.]+)')


class Connection:
    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        #: marker -> records seen holding it, and when the latest arrived
        self.count: dict[int, int] = {}
        self.latest: dict[int, float] = {}
        #: marker -> the frame's _tstamp (RxDjango frames: server time of the change)
        self.changed_at: dict[int, float] = {}
        self.arrived = asyncio.Event()


async def open_connection(kind: str, url: str, options: dict[str, Any]) -> tuple[Any, Connection]:
    ws = await websockets.connect(url, max_size=2**24, open_timeout=60, ping_interval=None)
    if kind == "rx":
        await ws.send(json.dumps({"token": options["token"], "lastUpdate": None}))
        while '"end_initial_state"' not in await ws.recv():
            pass
    elif kind == "dcrf":
        request = {"action": "subscribe_instance", "pk": options["task"], "request_id": 1}
        await ws.send(json.dumps(request))
        while '"subscribe_instance"' not in await ws.recv():
            pass
    elif kind == "dcrf_group":
        request = {"action": "subscribe_to_task", "pk": options["task"], "request_id": 1}
        await ws.send(json.dumps(request))
        while '"subscribe_to_task"' not in await ws.recv():
            pass
    return ws, Connection()


async def read_forever(ws: Any, connection: Connection) -> None:
    try:
        async for text in ws:
            received = time.time()
            text = text if isinstance(text, str) else text.decode()
            for match in MARKER.finditer(text):
                k = int(match.group(1))
                connection.seen.setdefault(k, received)
                connection.count[k] = connection.count.get(k, 0) + 1
                connection.latest[k] = received
                stamp = TSTAMP.search(text)
                if stamp is not None:
                    connection.changed_at.setdefault(k, float(stamp.group(1)))
            connection.arrived.set()
    except websockets.ConnectionClosed:
        pass


def has(connection: Connection, k: int, rows: int | None) -> bool:
    """Whether the connection holds change ``k`` (all ``rows`` of it, if given)."""
    return connection.count.get(k, 0) >= rows if rows else k in connection.seen


async def main() -> None:
    kind, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = json.loads(sys.argv[4])
    opened = []
    for start in range(0, count, 50):  # in waves, like a crowd arriving
        wave = [open_connection(kind, url, options) for _ in range(min(50, count - start))]
        opened.extend(await asyncio.gather(*wave))
    readers = [asyncio.create_task(read_forever(ws, c)) for ws, c in opened]
    print(json.dumps({"ready": len(opened)}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if "quit" in command:
            break
        k = int(command["collect"])
        rows = command.get("rows")
        deadline = time.monotonic() + (300 if rows else 60)

        while not all(has(c, k, rows) for _, c in opened) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if rows:
            times = [c.latest[k] if has(c, k, rows) else None for _, c in opened]
        else:
            times = [c.seen.get(k) for _, c in opened]
        since_change = [
            c.seen[k] - c.changed_at[k] for _, c in opened if k in c.seen and k in c.changed_at
        ]
        print(json.dumps({"k": k, "times": times, "since_change": since_change}), flush=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws, _ in opened), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
