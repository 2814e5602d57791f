"""What a live client asks for: action calls and writes, and access re-checked meanwhile.

:class:`Requests` is the part of :class:`~rxdjango._consumer.ChannelConsumer` that
runs them once a frame is parsed. Ordinary calls and writes run one at a time, in the
order the client sent them (the call worker); detached actions run as tasks of their
own, at most ``RX_MAX_DETACHED_ACTIONS`` at once. Before each one, and every
``RX_PERMISSION_RECHECK`` seconds while the socket is idle, access is checked again.
While the process shuts down (``_shutdown``) each request not started yet is refused
with a 503 reply, so every request a client sent gets its answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _telemetry
from ._access import Credential, recheck, recheck_sync
from ._db_threads import in_db_thread, overloaded, saturated
from ._dispatch import Call, call_refusal, is_call, parse_call, run_call
from ._lifecycle import Lifecycle
from ._protocol import CloseCode, Status, error_frame
from ._registry import ChannelSpec
from ._writes import Write, is_write, parse_write, perform_write, refusal, restoring_records
from .conf import rx_settings

if TYPE_CHECKING:
    from ._contract import Channel

__all__ = ["Job", "Requests"]

logger = logging.getLogger("rxdjango")

#: What a write or action refused by a re-check of access says.
_DENIED = {
    Status.UNAUTHORIZED: "not authenticated",
    Status.FORBIDDEN: "not allowed",
    Status.NOT_FOUND: "not found",
}


#: What a request refused because the process is shutting down says.
_RESTARTING = "the server is restarting: send it again"

#: What a request refused because the database work of the process is behind says.
_BUSY = "the server is busy: send it again later"

#: What a request refused because too many of this connection's requests wait says.
_QUEUED = "too many requests waiting"


@dataclass(frozen=True)
class Job:
    """A queued request: how to run it, how to answer it without running it (the
    process shuts down, or it waited too long while the process was behind), and
    when it arrived."""

    run: Callable[[], Awaitable[None]]
    refuse: Callable[[], None]
    refuse_busy: Callable[[], None]
    queued_at: float = field(default_factory=time.monotonic)

    def waited_behind(self) -> bool:
        """It has waited ``RX_DB_QUEUE_WAIT`` seconds behind its socket's earlier
        requests, and every database thread is still taken: the process is behind.
        (A wait that only the socket's own slow request caused is not refused.)"""
        limit = rx_settings.RX_DB_QUEUE_WAIT
        if limit is None or time.monotonic() - self.queued_at < float(limit):
            return False
        return saturated()


class Requests:
    """Action calls, writes and access re-checks of one connection (a part of it)."""

    spec: ChannelSpec
    channel: Channel | None
    lifecycle: Lifecycle
    credential: Credential
    _anchors: list[Any]
    loop: asyncio.AbstractEventLoop
    #: ordinary calls and writes waiting for the call worker (made by the first one)
    _calls: deque[Job] | None
    #: the call worker, while it has requests to run
    _call_worker_task: asyncio.Task[None] | None
    _recheck_timer: asyncio.TimerHandle | None
    _detached: int
    #: a request of the call worker is running
    _running: bool
    #: the process shuts down: requests not started are refused
    _draining: bool
    _deliveries: int
    _checked_at: float

    if TYPE_CHECKING:  # provided by the connection

        def send_frame(self, data: Any) -> None: ...
        def close_soon(self, code: int) -> None: ...
        def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def _dispatch(self, frame: Any) -> None:
        if is_call(frame):
            call = parse_call(frame, self.spec.actions)
            if not isinstance(call, Call):
                self.send_frame(call)
            elif self._draining:
                self._refuse_call(call)
            elif call.spec.detached:
                if self._detached >= int(rx_settings.RX_MAX_DETACHED_ACTIONS):
                    self.send_frame(
                        call_refusal(
                            call.call_id,
                            Status.TOO_MANY_REQUESTS,
                            "too many detached actions running",
                        )
                    )
                    return
                self._detached += 1
                self._spawn(self._run_and_reply(call)).add_done_callback(self._detached_done)
            elif self._waiting_requests() >= int(rx_settings.RX_MAX_PENDING_REQUESTS):
                self._refuse_busy(call, Status.TOO_MANY_REQUESTS)
            elif overloaded():
                self._refuse_busy(call, Status.UNAVAILABLE)
            else:
                self._queue(
                    Job(
                        functools.partial(self._run_and_reply, call),
                        functools.partial(self._refuse_call, call),
                        functools.partial(self._refuse_busy, call, Status.UNAVAILABLE),
                    )
                )
        elif is_write(frame):
            write = parse_write(frame, self.spec.state_model(), self.spec.writable)
            if not isinstance(write, Write):
                self.send_frame(write)
                return
            job = Job(
                functools.partial(self._write, write),
                functools.partial(self._refuse_write, write),
                functools.partial(self._refuse_busy, write, Status.UNAVAILABLE),
            )
            if self._draining:
                job.refuse()
            elif self._waiting_requests() >= int(rx_settings.RX_MAX_PENDING_REQUESTS):
                self._refuse_busy(write, Status.TOO_MANY_REQUESTS)
            elif overloaded():
                self._refuse_busy(write, Status.UNAVAILABLE)
            else:
                self._queue(job)
        elif isinstance(frame, dict) and "token" in frame:
            self.send_frame(error_frame("already authenticated"))
        else:
            self.send_frame(error_frame("unknown message"))

    def _refuse_busy(self, request: Call | Write, status: Status) -> None:
        """Refuse a request unrun: the process's database work is behind (503) or too
        many of this connection's requests wait (429)."""
        _telemetry.requests_refused.labels(
            "busy" if status is Status.UNAVAILABLE else "queued"
        ).inc()
        message = _BUSY if status is Status.UNAVAILABLE else _QUEUED
        if isinstance(request, Call):
            self.send_frame(call_refusal(request.call_id, status, message))
        else:
            self.send_frame(refusal(request.write_id, status, message))

    def _detached_done(self, task: asyncio.Task[Any]) -> None:
        self._detached -= 1

    def _refuse_call(self, call: Call) -> None:
        self.send_frame(call_refusal(call.call_id, Status.UNAVAILABLE, _RESTARTING))

    def _refuse_write(self, write: Write) -> None:
        self.send_frame(refusal(write.write_id, Status.UNAVAILABLE, _RESTARTING))

    def _waiting_requests(self) -> int:
        return len(self._calls) if self._calls is not None else 0

    def _queue(self, job: Job) -> None:
        """Queue an ordinary call or write for the call worker, started if it is not
        running (an idle connection holds neither a queue nor a worker task)."""
        if self._calls is None:
            self._calls = deque()
        self._calls.append(job)
        if self._call_worker_task is None:
            self._call_worker_task = self._spawn(self._call_worker())

    async def _call_worker(self) -> None:
        """Ordinary actions and writes, one at a time, in the order the client sent them;
        none once the connection is closing. It ends when none waits."""
        behind_another = False  # the first request taken waited behind no other
        try:
            while self._calls:
                job = self._calls.popleft()
                if self._draining:
                    job.refuse()
                elif behind_another and job.waited_behind():
                    job.refuse_busy()
                elif self.lifecycle is Lifecycle.LIVE:
                    self._running = True
                    try:
                        await job.run()
                    finally:
                        self._running = False
                        behind_another = True
        finally:
            self._call_worker_task = None

    def _refuse_waiting(self) -> None:
        """Answer every queued request with a 503 (the process is shutting down)."""
        self._draining = True
        while self._calls:
            self._calls.popleft().refuse()

    @property
    def _busy(self) -> bool:
        """A request is running (its reply is not sent yet)."""
        return self._running or self._detached > 0

    async def _write(self, write: Write) -> None:
        assert self.channel is not None
        if overloaded():  # nothing was read or written: the client's rollback is exact
            self._refuse_busy(write, Status.UNAVAILABLE)
            return
        channel, anchors, credential = self.channel, list(self._anchors), self.credential

        def checked_write() -> tuple[dict[str, Any], Status | None]:
            denied = recheck_sync(channel, credential)
            if denied is not None:
                return refusal(write.write_id, denied, _DENIED[denied]), denied
            return perform_write(channel, anchors, write), None

        try:
            reply, denied = await in_db_thread(checked_write)
            restore = None if reply["success"] or denied else await self._restoring(write)
        except Exception:
            logger.exception("rxdjango: write %s failed", write.operation)
            reply, denied = refusal(write.write_id, Status.SERVER_ERROR, "internal error"), None
            restore = None
        self._checked_at = time.monotonic()
        if restore:
            self.send_frame(restore)
        self.send_frame(reply)
        if denied is not None:
            self.close_soon(CloseCode[denied.name])

    async def _restoring(self, write: Write) -> list[Any] | None:
        """The record a refused write touched, as it is now, so the client can undo.

        It must be at least as new as every live frame queued before it (an older
        record would undo a newer change for good), so it is read again while live
        frames arrived during the read; frames that arrive after it are older or
        equal, and applying them in order ends on the same values."""
        assert self.channel is not None
        channel, anchors = self.channel, list(self._anchors)
        for _attempt in range(3):
            seen = self._deliveries
            restore = await in_db_thread(restoring_records, channel, anchors, write)
            if self._deliveries == seen:
                return restore
        return None  # changes keep coming: they bring the record back themselves

    async def _run_and_reply(self, call: Call) -> None:
        assert self.channel is not None
        if overloaded():
            self._refuse_busy(call, Status.UNAVAILABLE)
            return
        denied = await self._recheck()
        if denied is not None:
            self.send_frame(call_refusal(call.call_id, denied, _DENIED[denied]))
            self.close_soon(CloseCode[denied.name])
            return
        self.send_frame(await run_call(self.channel, call))

    # -- access for as long as the socket is open -----------------------------------------

    async def _recheck(self) -> Status | None:
        """Whether the user may still use this connection (see ``_access``)."""
        assert self.channel is not None
        self._checked_at = time.monotonic()
        return await recheck(self.channel, self.credential)

    def _schedule_recheck(self) -> None:
        """Re-check an idle connection every ``RX_PERMISSION_RECHECK`` seconds (writes and
        actions check before they run, which counts as a check). A timer, not a task:
        an idle connection holds no coroutine for it."""
        period = rx_settings.RX_PERMISSION_RECHECK
        if not period or self.lifecycle not in (Lifecycle.STARTING, Lifecycle.LIVE):
            return
        due = self._checked_at + float(period) * random.uniform(0.9, 1.1)  # no herd
        delay = max(0.0, due - time.monotonic())
        self._recheck_timer = self.loop.call_later(delay, self._recheck_if_due)

    def _recheck_if_due(self) -> None:
        self._recheck_timer = None
        if time.monotonic() - self._checked_at < float(rx_settings.RX_PERMISSION_RECHECK) * 0.9:
            self._schedule_recheck()  # a request checked meanwhile
        else:
            self._spawn(self._recheck_then_schedule())

    async def _recheck_then_schedule(self) -> None:
        try:
            denied = await self._recheck()
        except Exception:
            logger.exception("rxdjango: re-checking access to %s failed", self.spec.channel_id)
            denied = None
        if denied is not None:
            self.close_soon(CloseCode[denied.name])
        else:
            self._schedule_recheck()
