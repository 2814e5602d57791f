"""How the backend reaches Redis: one server, or a Redis Cluster found behind the URL.

``REDIS_URL`` may name one server or any node of a cluster: the first connection asks
the node (``INFO cluster``) and, on a cluster, the backend talks through redis-py's
``RedisCluster``, which learns every node and follows slots as they move. Keys are laid
out so that every transaction and script touches one hash slot (:mod:`.redis_store`).

What differs on a cluster is kept here:

* fan-out is sharded pub/sub (``SPUBLISH``): a message reaches the nodes of one shard
  only, where plain ``PUBLISH`` is copied to every node of the cluster;
* a transaction spans one slot, so a change reaching several anchors writes each
  anchor in a transaction of its own;
* the data's identity (what the cache epoch follows) is every master's run id: a
  failover may lose writes the old master acknowledged, so clients reload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

__all__ = ["client_factory", "data_identity", "is_cluster", "publish_command"]

logger = logging.getLogger("rxdjango")


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def publish_command(client: Any) -> str:
    """``SPUBLISH`` on a cluster (one shard hears it), else ``PUBLISH``."""
    return "SPUBLISH" if is_cluster(client) else "PUBLISH"


def data_identity(client: Any) -> tuple[str, str]:
    """The Redis version (of one node) and what identifies the data it holds: the run
    id of the server, or of every master of a cluster (a restart or a failover
    changes it)."""
    if is_cluster(client):
        answers = client.info("server", target_nodes=RedisCluster.PRIMARIES)
        if "run_id" in answers:  # one master only: redis-py answers for it alone
            answers = {"": answers}
        run_ids = sorted(str(info["run_id"]) for info in answers.values())
        version = str(next(iter(answers.values()))["redis_version"])
        return version, "+".join(run_ids)
    info = client.info("server")
    return str(info["redis_version"]), str(info["run_id"])


def client_factory(url: str) -> Callable[[], Any]:
    """A factory of clients for ``url``: cluster clients if the node is in a cluster.

    The node is asked once, when the first client is made. If it cannot be reached
    then, one server is assumed (and said in the log): a cluster is detected on the
    first start that reaches it.
    """
    options: dict[str, Any] = {
        "socket_keepalive": True,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
    }
    cluster: list[bool] = []

    def detect() -> bool:
        if not cluster:
            probe = redis.Redis.from_url(url, socket_connect_timeout=5)
            try:
                answer: Any = probe.info("cluster")
                cluster.append(bool(answer.get("cluster_enabled")))
            except RedisError as error:
                logger.warning(
                    "rxdjango: could not ask Redis whether it is a cluster (%s); "
                    "assuming one server",
                    type(error).__name__,
                )
                return False
            finally:
                probe.close()
        return cluster[0]

    def connect() -> Any:
        if detect():
            return RedisCluster.from_url(url, **options)
        return redis.Redis.from_url(
            url, retry_on_error=[RedisConnectionError, RedisTimeoutError], **options
        )

    return connect
