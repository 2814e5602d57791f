"""gunicorn's worker for the test project: the one docs/production.md shows."""

import os

from uvicorn_worker import UvicornWorker


class Worker(UvicornWorker):
    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "lifespan": "off",
        "ws_max_size": 1048576,
        # The proxy test pings more often than uvicorn's 20 s, to see nginx keep an idle
        # socket open past a short proxy_read_timeout.
        "ws_ping_interval": float(os.environ.get("RX_TEST_WS_PING_INTERVAL", "20")),
    }
