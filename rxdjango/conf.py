"""Library settings, read from ``django.conf.settings`` each time they are used.

Reading lazily (never freezing values in module constants) keeps
``override_settings`` working in tests and lets settings change without reloads.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

__all__ = ["DEFAULTS", "rx_settings"]

ONE_WEEK = 7 * 24 * 3600

DEFAULTS: dict[str, Any] = {
    # Seconds a client has to send its auth frame after the socket opens.
    "RX_AUTH_TIMEOUT": 10.0,
    # Who a client is: callables (token, scope) -> user or None, or their dotted paths,
    # tried in order (rxdjango.auth). Default: DRF tokens, then the session cookie.
    "RX_AUTHENTICATORS": ["rxdjango.auth.drf_token", "rxdjango.auth.session"],
    # Seconds an idle anchor (no connected client) stays cached.
    "RX_CACHE_TTL": ONE_WEEK,
    # Target size in bytes of one initial-state frame (servers close frames over 1 MiB).
    "RX_FRAME_SIZE": 256 * 1024,
    # Changes remembered per anchor for reconnect catch-up.
    "RX_HISTORY_SIZE": 1000,
    # Largest client frame accepted, in bytes.
    "RX_MAX_MESSAGE_SIZE": 1024 * 1024,
    # Threads that run the library's database work (writes, snapshots, logins, hooks);
    # each keeps one connection per database open (docs/production.md).
    "RX_DB_THREADS": 8,
    # Seconds a database call may wait for a thread before clients' new writes and
    # actions are refused with 503 (None: never refused).
    "RX_DB_QUEUE_WAIT": 0.25,
    # Seconds a database thread keeps a connection when CONN_MAX_AGE is 0 (Django's
    # default, meant for one connection per request); otherwise CONN_MAX_AGE rules.
    "RX_DB_CONNECTION_AGE": 600.0,
    # Requests (writes, actions) one connection may have waiting for their turn
    # before more are refused with 429.
    "RX_MAX_PENDING_REQUESTS": 16,
    # Frames per second one connection may send (None: no limit); see docs/settings.md.
    "RX_RATE_LIMIT": 100,
    # Frames per second one user may send over all their sockets in one process.
    "RX_USER_RATE_LIMIT": 100,
    # Sockets one user may have open at once in the whole deployment (None: no limit).
    "RX_MAX_CONNECTIONS_PER_USER": 100,
    # Detached actions one connection may have running at once (beyond: a 429 reply).
    "RX_MAX_DETACHED_ACTIONS": 16,
    # Bytes that may wait for a slow client (live frames and its initial state) before
    # it is closed (4408).
    "RX_SEND_QUEUE_LIMIT": 8 * 1024 * 1024,
    # Seconds frames may wait for a client without any being taken before it is closed
    # (4408): a client that stopped reading.
    "RX_SEND_TIMEOUT": 60.0,
    # Seconds a process drains on SIGTERM (replies to what runs, 503 to what waits,
    # clients closed with 1012) before its server stops; None: no draining handler.
    "RX_SHUTDOWN_TIMEOUT": 10.0,
    # Directory where `makefrontend` writes the TypeScript of the channels.
    "RX_FRONTEND_DIR": None,
    # WebSocket base URL written into generated channels ("" = the page's own origin).
    "RX_WEBSOCKET_URL": "",
    # Production backend; None selects the embedded in-memory backend.
    "REDIS_URL": None,
    # Dotted path of a callable returning a redis.Redis client (e.g. through Sentinel);
    # selects the Redis backend like REDIS_URL and takes precedence over it.
    "RX_REDIS_CLIENT": None,
    # Prefix of every Redis key and pub/sub channel the library uses.
    "RX_REDIS_PREFIX": "rx",
    # Seconds between a process's Redis heartbeats (watch leases, data-loss checks).
    "RX_REDIS_HEARTBEAT": 5.0,
    # Seconds one process may spend loading an anchor before another takes over.
    "RX_LOAD_TIMEOUT": 60.0,
    # Seconds between re-checks of has_permission (and the user's token) on an idle
    # socket; writes and actions re-check before they run. None: only those.
    "RX_PERMISSION_RECHECK": 60.0,
    # Capture changes in the database (triggers and a change log, on SQLite and
    # PostgreSQL): every committed change reaches clients, whatever made it.
    "RX_CAPTURE": True,
    # Seconds between checks of an SQLite database for commits by other connections
    # (PostgreSQL wakes the relay at once with NOTIFY).
    "RX_CAPTURE_POLL": 0.02,
    # Seconds a captured change may wait in the log unrelayed; past it, cached anchors
    # are dropped (they reload from the tables) and the old rows deleted.
    "RX_CAPTURE_RETENTION": 3600.0,
    # Scheme and host that hyperlinked serializer fields build absolute URLs with
    # (there is no request behind a broadcast); None refuses hyperlinked fields.
    "RX_BASE_URL": None,
}


class _Settings:
    """Attribute access to RxDjango settings with defaults."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown RxDjango setting {name!r}")
        return getattr(django_settings, name, DEFAULTS[name])


rx_settings = _Settings()
