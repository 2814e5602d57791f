"""A real Redis Cluster for the tests: three masters, each with one replica, on local ports.

Started with ``redis-server --cluster-enabled yes`` and joined by ``redis-cli --cluster
create``, as an operator would. A test may kill a master; its replica is promoted by the
cluster itself (a short node timeout keeps that to a second or two).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from rxdjango.testing import timeout

#: Milliseconds a master may be unreachable before its replica takes over.
NODE_TIMEOUT_MS = 1000


#: Node ports are drawn below Linux's ephemeral range (32768 and up), bus ports included
#: (port + 10,000): an outgoing connection of another test cannot hold one meanwhile.
_PORTS = range(12_000, 22_000)


def _free_port_pair(taken: list[int]) -> int:
    """A port free for a node and for its cluster bus (the port + 10,000)."""
    while True:
        port = random.choice(_PORTS)
        if port in taken:
            continue
        try:
            for candidate in (port, port + 10_000):
                socket.create_server(("127.0.0.1", candidate)).close()
        except OSError:
            continue
        return port


class LocalRedisCluster:
    """Six redis-server processes forming one cluster (3 masters, 3 replicas)."""

    def __init__(self, directory: Path) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        assert server and cli, "redis-server and redis-cli are required (apt install redis-server)"
        self.server_binary, self.cli_binary = server, cli
        self.directory = directory
        self.ports: list[int] = []
        while len(self.ports) < 6:
            self.ports.append(_free_port_pair(self.ports))
        self.processes: dict[int, subprocess.Popen] = {}

    def url(self, index: int = 0) -> str:
        """The URL of one node (any node serves: the library discovers the rest)."""
        return f"redis://127.0.0.1:{self.ports[index]}/0"

    def start(self) -> None:
        """Start six nodes, join them into one cluster, wait until it is ok."""
        for port in self.ports:
            self._start_node(port)
        for index, port in enumerate(list(self.ports)):
            while not self._answers(port):
                # Its port was taken between the probe and the bind: another one.
                del self.processes[port]
                port = self.ports[index] = _free_port_pair(self.ports)
                self._start_node(port)
        self._join()

    def _answers(self, port: int) -> bool:
        """Whether the node on ``port`` answers (False if it exited: it could not bind)."""
        process = self.processes[port]
        deadline = time.monotonic() + timeout(2)
        while process.poll() is None:
            try:
                return bool(redis.Redis(port=port).ping())
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "a node did not start"
                time.sleep(0.05)
        return False

    def _start_node(self, port: int) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                self.server_binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--dir", str(node_dir),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _join(self) -> None:
        subprocess.run(
            [
                self.cli_binary,
                "--cluster", "create",
                *[f"127.0.0.1:{port}" for port in self.ports],
                "--cluster-replicas", "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout(30),
        )  # fmt: skip
        self.wait_until_ok()

    def wait_until_ok(self) -> None:
        """Until every live node says the cluster is ok and agrees on three masters, and
        every replica has synced (a replica that never did cannot take over)."""

        def ok() -> bool:
            for port in self.live_ports():
                node = redis.Redis(port=port)
                if node.cluster("info").get("cluster_state") != "ok":
                    return False
                if len(self.masters(port)) != 3:
                    return False
                replication = node.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            return True

        self._wait(ok, "the cluster did not become ok", units=30)

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def masters(self, via: int | None = None) -> dict[int, list[tuple[int, int]]]:
        """Port of each live master → the slot ranges it serves."""
        node = redis.Redis(port=via or self.live_ports()[0])
        owners: dict[int, list[tuple[int, int]]] = {}
        for start, end, master, *_replicas in node.execute_command("CLUSTER", "SLOTS"):
            owners.setdefault(int(master[1]), []).append((int(start), int(end)))
        return owners

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        node = redis.Redis(port=self.live_ports()[0])
        slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
        for port, ranges in self.masters().items():
            if any(start <= slot <= end for start, end in ranges):
                return port
        raise AssertionError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.kill()
        process.wait(timeout(2))

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout(2))

    @staticmethod
    def _wait(check, message: str, units: float = 2) -> None:
        deadline = time.monotonic() + timeout(units)
        while True:
            try:
                if check():
                    return
            except (redis.ConnectionError, redis.ResponseError):
                pass
            assert time.monotonic() < deadline, message
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    """``python tests/redis_cluster.py <command>...``: run the command (a test run) with
    ``REDIS_URL_FOR_TESTS`` naming one node of a fresh local cluster, then stop it."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        cluster = LocalRedisCluster(Path(scratch))
        cluster.start()
        try:
            env = {**os.environ, "REDIS_URL_FOR_TESTS": cluster.url(0)}
            return subprocess.call(argv, env=env)
        finally:
            cluster.stop()


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
