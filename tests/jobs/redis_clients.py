"""Redis client factories for RX_REDIS_CLIENT (the Sentinel test uses this one)."""

from __future__ import annotations

import os

from redis import Redis
from redis.sentinel import Sentinel


def sentinel_client() -> Redis:
    """The current primary of ``rxprimary``, as Sentinel at RX_TEST_SENTINEL reports it."""
    host, port = os.environ["RX_TEST_SENTINEL"].rsplit(":", 1)
    return Sentinel([(host, int(port))], socket_timeout=2).master_for(
        "rxprimary", socket_timeout=None
    )
