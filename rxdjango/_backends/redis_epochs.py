"""Time and epochs on a Redis deployment: one clock, and knowing when the cache lost data.

Every process stamps changes with Redis's clock (strictly increasing across
processes). An anchor is hot only in the current *epoch*: the epoch changes when
Redis lost data (FLUSHALL, restart, a new server behind the URL) or a change could not
be applied; every process then closes its clients with 4408 and they reload. A lost
pub/sub connection closes the clients that were open meanwhile, which may have
missed frames. :class:`Epochs` is that part of
:class:`~.redis_backend.RedisBackend`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from .. import _events, _telemetry
from .._hub import Hub, Subscriber
from .._protocol import CloseCode, Envelope
from ..exceptions import RxDjangoError
from .redis_client import data_identity
from .redis_fanout import Listener, envelope
from .redis_keys import Keys

__all__ = ["READY_TIMEOUT", "Epochs"]

logger = logging.getLogger("rxdjango")

#: How long ``snapshot`` waits for the pub/sub subscription before giving up.
READY_TIMEOUT = 10.0


class Epochs:
    """The shared clock, the cache epoch and the pub/sub connection (a part of the backend)."""

    #: redis-py's type hints mix sync and async results; typed Any
    redis: Any
    keys: Keys
    hub: Hub
    where: str
    epoch: str
    listener: Listener
    _clock: Any
    _epoch_script: Any
    _cut_off: set[Subscriber]
    _wake: threading.Event
    _offset_ms: float
    _needs_new_epoch: bool
    _threads_started: bool
    #: PUBLISH, or SPUBLISH on a cluster
    _publish_command: str

    if TYPE_CHECKING:  # provided by the backend

        def _serve_maintenance(self) -> None: ...

    def clock(self) -> float:
        """Redis server time, strictly increasing across every process."""
        return float(self._clock(keys=[self.keys.clock]))

    def _now_ms(self) -> float:
        return time.time() * 1000 + self._offset_ms

    def _ensure_epoch(self, replace: bool = False) -> None:
        """Adopt the current epoch, starting one if Redis lost it (or ``replace``)."""
        version, run_id = data_identity(self.redis)
        if int(version.split(".")[0]) < 7:
            raise RxDjangoError(f"RxDjango needs Redis 7 or later, {self.where} runs {version}")
        known = self.epoch if replace else ""
        raw, minted = self._epoch_script(
            keys=[self.keys.epoch], args=[run_id, uuid.uuid4().hex, known]
        )
        epoch = raw.decode()
        if minted:  # every process adopts it now, not at its next heartbeat
            self.publish_message(self.keys.control, envelope(Envelope.EPOCH, None, ""))
        if epoch != self.epoch:
            first = not self.epoch
            self.epoch = epoch
            if not first:
                logger.warning("rxdjango: Redis cache epoch changed; clients reload")
                self.hub.close_all(CloseCode.TIMEOUT)

    def publish_message(self, channel: str, message: bytes) -> None:
        """Publish on one of the library's channels (sharded on a cluster)."""
        self.redis.execute_command(self._publish_command, channel, message)

    def _check_epoch(self) -> None:
        """One read: adopt a new epoch another process started (or start one if the
        key is gone) before trusting or writing any cached anchor."""
        current = self.redis.get(self.keys.epoch)
        if current is None or current.decode() != self.epoch:
            self._ensure_epoch()

    def _ready(self) -> None:
        """Before reading state for a client: subscribed, so no later frame is missed."""
        self._check_epoch()
        if self._threads_started and not self.listener.ready.wait(READY_TIMEOUT):
            raise RxDjangoError(f"Redis pub/sub at {self.where} is not reachable")

    def _on_disconnect(self) -> None:
        self._cut_off = self.hub.connections()

    def _on_reconnect(self) -> None:
        """Pub/sub is back. Connections that were open while it was lost may have missed
        frames: close them with 4408 (they catch up or resync). Those that arrived
        meanwhile waited for the subscription and missed nothing."""
        _telemetry.redis_reconnects.inc()
        cut_off, self._cut_off = self._cut_off, set()
        _events.emit("redis_regained", clients_reloading=len(cut_off))
        try:
            self._ensure_epoch()
        except RedisError:
            logger.warning("rxdjango: could not check the Redis epoch after a reconnect")
        self.hub.close_all(CloseCode.TIMEOUT, only=cut_off)

    def _on_control(self, header: dict[str, Any], payload: str) -> None:
        kind = header.get("k")
        if kind == Envelope.ALL:
            self.hub.publish_all(payload)
        elif kind == Envelope.REVOKE:
            order = orjson.loads(payload)
            self.hub.close_user(order["u"], int(order["code"]), order["c"], header.get("a"))
        elif kind == Envelope.EPOCH:
            self._wake.set()
            try:
                self._ensure_epoch()
            except RedisError:
                logger.warning("rxdjango: could not read the new Redis epoch")

    def _start_new_epoch(self) -> None:
        """Start a new epoch now if Redis answers, else keep retrying in the background
        (this process may be a command that exits soon: it tries once more at exit)."""
        try:
            self._ensure_epoch(replace=True)
            self._needs_new_epoch = False
        except RedisError:
            self._serve_maintenance()
            self._wake.set()

    def _last_chance(self) -> None:
        """At exit: a change this process could not propagate still needs a new epoch."""
        if self._needs_new_epoch:
            try:
                self._ensure_epoch(replace=True)
            except RedisError:
                logger.error("rxdjango: Redis unreachable at exit; cached state may be stale")
