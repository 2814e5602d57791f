"""A process's propagations waiting for busy anchors, and stepping aside for small ones.

Threads of this process against the scheduling of :mod:`rxdjango._backends.busy_anchors`
and :mod:`rxdjango._priority` (no database: what is checked is who waits for whom).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rxdjango import _priority
from rxdjango._backends.busy_anchors import BusyAnchors
from rxdjango._slots import Place, working_in
from rxdjango.testing import timeout

A = ("channel", 1)
B = ("channel", 2)


class Anchors:
    """Anchor locks and a record of what each apply got once it held them."""

    def __init__(self) -> None:
        self.locks = {A: threading.Lock(), B: threading.Lock()}
        self.applied: list[dict[str, set[Any]]] = []
        self.failing = False

    def apply(self, changes: Any, scope: set[Any], wait: bool) -> bool:
        taken = []
        for ref in sorted(scope):
            if not self.locks[ref].acquire(blocking=wait):
                for lock in taken:
                    lock.release()
                return False
            taken.append(self.locks[ref])
        try:
            self.applied.append(changes())
            if self.failing:
                raise RuntimeError("propagation failed")
        finally:
            for lock in taken:
                lock.release()
        return True


def in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            target(*args)
        except BaseException as failure:
            failures.append(failure)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failures


def wait_until(predicate: Any) -> None:
    deadline = time.monotonic() + timeout(2)
    while not predicate():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.001)


def test_changes_for_a_busy_anchor_are_applied_together_once_it_is_free() -> None:
    anchors, busy = Anchors(), BusyAnchors()
    anchors.locks[A].acquire()  # another propagation holds A
    callers = [in_thread(busy.apply, [({"task": {n}}, {A})], anchors.apply, None) for n in range(5)]
    wait_until(lambda: len(busy._waiting) == 1 and not busy._waiting[A].started)
    wait_until(lambda: busy._waiting[A].touched == {"task": set(range(5))})
    # A change for a free anchor is applied meanwhile, at once.
    busy.apply([({"task": {9}}, {B})], anchors.apply, None)
    assert anchors.applied == [{"task": {9}}]
    anchors.locks[A].release()
    for thread, failures in callers:
        thread.join(timeout(2))
        assert not thread.is_alive() and not failures
    # Every caller returned after one propagation of all five changes.
    assert anchors.applied == [{"task": {9}}, {"task": {0, 1, 2, 3, 4}}]
    assert not busy._waiting


def test_callers_that_joined_a_failed_propagation_fail_too() -> None:
    anchors, busy = Anchors(), BusyAnchors()
    anchors.locks[A].acquire()
    callers = [in_thread(busy.apply, [({"task": {n}}, {A})], anchors.apply, None) for n in range(3)]
    wait_until(lambda: A in busy._waiting and busy._waiting[A].touched == {"task": {0, 1, 2}})
    anchors.failing = True
    anchors.locks[A].release()
    for thread, failures in callers:
        thread.join(timeout(2))
        assert [str(failure) for failure in failures] == ["propagation failed"]


def test_a_caller_waiting_for_a_busy_anchor_gives_its_place_up() -> None:
    anchors, busy = Anchors(), BusyAnchors()
    places = threading.BoundedSemaphore(1)
    anchors.locks[A].acquire()

    def drain() -> None:
        place = Place(places)
        assert place.take(timeout(2))
        with working_in(place):
            busy.apply([({"task": {1}}, {A})], anchors.apply, None)

    thread, failures = in_thread(drain)
    wait_until(lambda: A in busy._waiting)
    # The only place is free while the drain waits: another drain runs meanwhile.
    assert places.acquire(timeout=timeout(2))
    places.release()
    anchors.locks[A].release()
    thread.join(timeout(2))
    assert not failures and anchors.applied == [{"task": {1}}]
    # Given up once, released once: the semaphore is back to one place, not two.
    assert places.acquire(blocking=False)
    with pytest.raises(ValueError):
        places.release()
        places.release()


@pytest.fixture
def longest_step_aside(monkeypatch: pytest.MonkeyPatch) -> float:
    """The longest a large propagation steps aside, as a share of the test timeout unit
    (what the tests wait for is elapsed time itself: computing, then stepping aside)."""
    longest = timeout(0.02)
    monkeypatch.setattr(_priority, "LONGEST_STEP_ASIDE", longest)
    return longest


def test_a_large_propagation_steps_aside_while_a_small_one_runs(longest_step_aside: float) -> None:
    small_running, small_done, stepping = threading.Event(), threading.Event(), threading.Event()
    waited: list[float] = []

    def small() -> None:
        with _priority.propagating(1):
            small_running.set()
            small_done.wait(timeout(2))

    def large() -> None:
        with _priority.propagating(_priority.SMALL_ROWS + 1):
            small_running.wait(timeout(2))
            time.sleep(2 * longest_step_aside)  # computing: it may then wait that long
            stepping.set()
            started = time.monotonic()
            _priority.step_aside()
            waited.append(time.monotonic() - started)

    small_thread, _ = in_thread(small)
    large_thread, failures = in_thread(large)
    assert stepping.wait(timeout(2))
    time.sleep(longest_step_aside / 2)
    assert not waited  # still stepping aside while the small one runs
    small_done.set()
    large_thread.join(timeout(2))
    small_thread.join(timeout(2))
    assert not failures and len(waited) == 1
    assert waited[0] >= longest_step_aside / 2


def test_a_large_propagation_steps_aside_no_longer_than_it_computed(
    longest_step_aside: float,
) -> None:
    small_done = threading.Event()
    waited: list[float] = []

    def small() -> None:
        with _priority.propagating(1):
            small_done.wait(timeout(4))

    small_thread, _ = in_thread(small)
    wait_until(lambda: _priority._small_running == 1)
    with _priority.propagating(_priority.SMALL_ROWS + 1):
        _priority.step_aside()  # it has computed nothing yet: no waiting
        time.sleep(2 * longest_step_aside)  # computing
        started = time.monotonic()
        _priority.step_aside()  # LONGEST_STEP_ASIDE, then on, though the small one runs on
        waited.append(time.monotonic() - started)
        assert small_thread.is_alive() and _priority._small_running == 1
    small_done.set()
    small_thread.join(timeout(2))
    assert waited[0] >= longest_step_aside * 0.9


def test_a_small_propagation_waiting_for_an_anchor_does_not_hold_up_a_large_one() -> None:
    """The small one may wait for the very anchor the large one is changing."""
    counted: list[int] = []

    def small_waiting() -> None:
        with _priority.propagating(1):
            counted.append(_priority._small_running)
            _priority.waiting()
            counted.append(_priority._small_running)
        counted.append(_priority._small_running)

    thread, failures = in_thread(small_waiting)
    thread.join(timeout(2))
    assert not failures and counted == [1, 0, 0]
