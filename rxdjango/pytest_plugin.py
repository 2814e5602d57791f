"""pytest fixtures that test channels the way browsers use them: over a real socket.

``rx_live_server`` serves the project's ASGI application with uvicorn on a thread of
the test process, on the test database; ``rx_client`` connects protocol clients to
it (``RxClient``, in ``_test_client``). The ``pytest11`` entry point registers this
module, so installing rxdjango makes the fixtures available. pytest loads plugins
before Django is configured: nothing here imports a model or reads a setting until a
fixture runs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from rxdjango._test_client import (
    ActionFailed,
    AuthRefused,
    RxClient,
    WriteRefused,
    deadline_in,
    seconds_per_unit,
)

if TYPE_CHECKING:
    from rxdjango.channels import ContextChannel

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pytest itself then says that async fixtures need a plugin
    _async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = [
    "ActionFailed",
    "AuthRefused",
    "ClientFactory",
    "LiveServer",
    "RxClient",
    "WriteRefused",
]


class LiveServer:
    """Where ``rx_live_server`` listens: ``url`` is its ``ws://`` base URL."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.url = f"ws://{host}:{port}"
        self.http_url = f"http://{host}:{port}"

    def __str__(self) -> str:
        return self.url


class ClientFactory:
    """What ``rx_client`` is: ``await rx_client(Channel, path, token=...)`` connects one
    client to ``rx_live_server``; every client is closed after the test."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.clients: list[RxClient] = []

    async def __call__(
        self,
        channel: type[ContextChannel],
        path: str,
        token: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        units: float = 1.0,
    ) -> RxClient:
        """A connected client that holds its whole initial state.

        ``token=None`` sends ``{"token": null}``: the session cookie in ``headers``
        (if any) authenticates. Raises :class:`AuthRefused` if the server refuses.
        """
        client = RxClient(self.server.url + path, channel, token, headers)
        self.clients.append(client)
        return await client.connect(units)

    async def close_all(self) -> None:
        for client in self.clients:
            await client.close()


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def rx_asgi_application() -> Any:
    """The ASGI application ``rx_live_server`` serves: ``settings.ASGI_APPLICATION``.

    Override this fixture to serve another one.
    """
    from channels.routing import get_default_application

    return get_default_application()


@pytest.fixture
def rx_live_server(transactional_db: None, rx_asgi_application: Any) -> Iterator[LiveServer]:
    """The ASGI application served for real, on a thread of this process.

    In this process, so it sees the test's database (a transactional one: changes
    propagate when transactions commit, and a test wrapped in one transaction never
    commits) and what the test commits reaches its clients even on the embedded
    backend. The cached state is forgotten before and after, as the database is
    flushed between tests.
    """
    from rxdjango.testing import reset_state

    _refuse_in_memory_sqlite()
    reset_state()
    try:
        with _serve(rx_asgi_application) as server:
            yield server
    finally:
        reset_state()  # stops the change relay before the database is flushed


@_async_fixture
async def rx_client(rx_live_server: LiveServer) -> AsyncIterator[ClientFactory]:
    """Connect protocol clients to ``rx_live_server``: ``await rx_client(Channel, path,
    token=...)`` returns a connected :class:`RxClient`."""
    factory = ClientFactory(rx_live_server)
    try:
        yield factory
    finally:
        await factory.close_all()


# -- serving ----------------------------------------------------------------------------


def _refuse_in_memory_sqlite() -> None:
    """Threads share an in-memory SQLite database through SQLite's shared cache, whose
    table locks fail a write at once ("database table is locked") while another
    thread reads, as the server does while it loads a state: tests would fail at
    random. A file in WAL mode lets the test write while the server reads."""
    from django.db import connections
    from django.db.backends.sqlite3.base import DatabaseWrapper as SQLite

    for connection in connections.all():
        if isinstance(connection, SQLite) and connection.is_in_memory_db():
            pytest.fail(
                f"rx_live_server cannot serve the in-memory SQLite test database "
                f"{connection.alias!r} (its table locks fail writes while the server "
                f"reads): set DATABASES[{connection.alias!r}]['TEST']['NAME'] to a file "
                f"(in WAL mode: OPTIONS['init_command'] = 'PRAGMA journal_mode=WAL')",
                pytrace=False,
            )


@contextlib.contextmanager
def _serve(application: Any) -> Iterator[LiveServer]:
    """uvicorn serving ``application`` on a thread until the block exits."""
    try:
        import uvicorn
    except ImportError:
        pytest.fail("rx_live_server serves with uvicorn: pip install 'rxdjango[server]'")
    # Listening before the server starts: a client that connects at once waits in the
    # backlog instead of racing the startup.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    host, port = listener.getsockname()[:2]
    config = uvicorn.Config(
        application,
        lifespan="off",
        log_level="warning",
        ws_ping_interval=None,
        timeout_graceful_shutdown=max(1, round(seconds_per_unit())),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [listener]}, name="rx_live_server", daemon=True
    )
    thread.start()
    deadline = deadline_in(2)
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            listener.close()
            pytest.fail("rx_live_server: uvicorn did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(host, port)
    finally:
        server.should_exit = True
        thread.join(seconds_per_unit() * 2)
        listener.close()
        if thread.is_alive():
            raise RuntimeError("rx_live_server: uvicorn did not stop")
