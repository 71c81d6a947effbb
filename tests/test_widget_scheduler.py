"""The widget's scheduler on its own (no Jupyter, no TensorFlow): priorities, coalescing, generations,
cancellation. Timing is controlled with events, never with wall-clock thresholds."""

from __future__ import annotations

import threading

import pytest

from sglrp_widgets.scheduler import COMPARE, PREFETCH, Scheduler

T = 30  # generous timeout for events: only reached when something is broken


@pytest.fixture
def sched():
    s = Scheduler(workers=2)
    yield s
    s.close()


def _blocker(started: threading.Event, release: threading.Event, log: list, name: str):
    def fn(gen):
        log.append((name, "start", gen))
        started.set()
        assert release.wait(T)
        log.append((name, "end", gen))
    return fn


def _units(log, name, n, gate=None):
    for i in range(n):
        if gate is not None:
            assert gate.wait(T)
        log.append((name, i))
        yield


def test_a_request_runs_and_publishes_when_current(sched):
    shown = []

    def fn(gen):
        with sched.publishing(gen) as current:
            if current:
                shown.append(gen)

    g = sched.request(fn)
    assert sched.wait(T)
    assert shown == [g] and sched.generation == g and sched.is_current(g)


def test_rapid_requests_coalesce_to_the_latest(sched):
    log = []
    started, release = threading.Event(), threading.Event()
    started2, release2 = threading.Event(), threading.Event()
    sched.request(_blocker(started, release, log, "a"))  # keep both workers busy
    assert started.wait(T)
    sched.request(_blocker(started2, release2, log, "b"))
    assert started2.wait(T)
    gens = [sched.request(lambda gen, k=k: log.append(("click", k, gen))) for k in range(5)]
    release.set()
    release2.set()
    assert sched.wait(T)
    clicks = [e for e in log if e[0] == "click"]
    assert clicks == [("click", 4, gens[-1])]
    assert sched.coalesced == 4


def test_a_new_request_does_not_wait_for_a_stale_running_one(sched):
    log = []
    started, release = threading.Event(), threading.Event()
    slow = sched.request(_blocker(started, release, log, "slow"))
    assert started.wait(T)
    done = threading.Event()
    fast = sched.request(lambda gen: (log.append(("fast", gen)), done.set()))
    assert done.wait(T), "the new request waited for the slow one"
    assert not sched.is_current(slow) and sched.is_current(fast)
    assert ("slow", "end", slow) not in log
    release.set()
    assert sched.wait(T)
    assert log[-1] == ("slow", "end", slow)


def test_one_worker_serialises_requests():
    s = Scheduler(workers=1)
    try:
        log = []
        started, release = threading.Event(), threading.Event()
        s.request(_blocker(started, release, log, "slow"))
        assert started.wait(T)
        s.request(lambda gen: log.append(("fast", gen)))
        assert not s.wait(0.2)  # the only worker is busy
        release.set()
        assert s.wait(T)
        assert [e[0] for e in log] == ["slow", "slow", "fast"]
    finally:
        s.close()


def test_stale_results_are_not_published(sched):
    started, release = threading.Event(), threading.Event()
    shown = []

    def slow(gen):
        started.set()
        assert release.wait(T)
        with sched.publishing(gen) as current:
            if current:
                shown.append("slow")

    sched.request(slow)
    assert started.wait(T)
    sched.request(lambda gen: shown.append("new") if sched.is_current(gen) else None)
    release.set()
    assert sched.wait(T)
    assert shown == ["new"]


def test_background_waits_for_the_current_request_and_runs_one_unit_at_a_time(sched):
    log = []
    started, release = threading.Event(), threading.Event()
    sched.request(_blocker(started, release, log, "req"))
    assert started.wait(T)
    sched.background(_units(log, "prefetch", 3), priority=PREFETCH)
    sched.background(_units(log, "compare", 2), priority=COMPARE)
    assert not sched.wait(0.2)
    assert [e for e in log if e[0] != "req"] == [], "background ran beside the user's request"
    release.set()
    assert sched.wait(T)
    # the comparison (higher priority) first, then the prefetch, never interleaved with the request
    assert log[2:] == [("compare", 0), ("compare", 1), ("prefetch", 0), ("prefetch", 1), ("prefetch", 2)]


def test_a_request_pauses_compare_and_cancels_prefetch(sched):
    log = []
    gate = threading.Event()
    in_unit = threading.Event()

    def compare_units():
        for i in range(3):
            log.append(("compare", i))
            if i == 0:
                in_unit.set()
                assert gate.wait(T)  # the first unit is running when the user clicks
            yield

    compare = sched.background(compare_units(), priority=COMPARE)
    prefetch = sched.background(_units(log, "prefetch", 3), priority=PREFETCH, cancel_on_request=True)
    assert in_unit.wait(T)
    sched.request(lambda gen: log.append(("click", gen)))
    gate.set()
    assert sched.wait(T)
    assert prefetch.cancelled and not prefetch.done and prefetch.finished.is_set()
    assert compare.done and not compare.cancelled
    names = [e[0] for e in log]
    assert "prefetch" not in names
    # the click ran beside the compare unit in progress (a free worker), before the remaining units
    assert names == ["compare", "click", "compare", "compare"]


def test_cancel_drops_queued_and_stales_running(sched):
    log = []
    started, release = threading.Event(), threading.Event()
    g = sched.request(_blocker(started, release, log, "a"))
    assert started.wait(T)
    assert sched.request_running()
    assert sched.cancel() is True
    assert not sched.is_current(g) and not sched.request_running()
    release.set()
    assert sched.wait(T)
    assert sched.cancel() is False  # nothing left to cancel


def test_a_cancelled_background_job_stops_after_its_unit(sched):
    log = []
    gate, in_unit = threading.Event(), threading.Event()

    def units():
        for i in range(5):
            log.append(i)
            in_unit.set()
            assert gate.wait(T)
            yield

    job = sched.background(units(), priority=COMPARE)
    assert in_unit.wait(T)
    job.cancel()
    gate.set()
    assert job.finished.wait(T)
    assert sched.wait(T)
    assert log == [0] and job.cancelled and not job.done


def test_errors_reach_their_owner_and_workers_survive(sched):
    errors = []

    def bad_units():
        yield
        raise RuntimeError("unit failed")

    sched.background(bad_units(), priority=COMPARE, on_error=errors.append)
    sched.request(lambda gen: 1 / 0)  # logged, the worker lives on
    assert sched.wait(T)
    assert [str(e) for e in errors] == ["unit failed"]
    ran = []
    sched.request(lambda gen: ran.append(gen))
    assert sched.wait(T) and ran


def test_close_drops_queued_work():
    s = Scheduler(workers=1)
    log = []
    started, release = threading.Event(), threading.Event()
    s.request(_blocker(started, release, log, "a"))
    assert started.wait(T)
    job = s.background(_units(log, "b", 3), priority=PREFETCH)
    s.close()
    release.set()
    assert job.cancelled and job.finished.wait(T)
    assert s.wait(T)
    assert [e for e in log if e[0] == "b"] == []
    assert s.background(_units(log, "c", 1)).cancelled  # nothing runs after close


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers"):
        Scheduler(workers=0)
