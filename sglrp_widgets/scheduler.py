"""A small scheduler for interactive work: the user's latest request always runs next.

Plain Python (threads, no Jupyter), so it is tested on its own. Three kinds of work:

* **requests** (:meth:`Scheduler.request`): what the user just asked for. Only the latest one waits in
  the queue (a newer request replaces an older one that has not started: rapid clicks coalesce), and it
  starts on the next free worker before any background work. Each request gets a *generation*; a
  request whose generation is no longer :meth:`~Scheduler.is_current` is stale and its result must be
  dropped (:meth:`~Scheduler.publishing` makes that check and the publication atomic).
* **background jobs** (:meth:`Scheduler.background`): lower-priority work made of small units (a
  generator: each ``next()`` runs one unit). A unit starts only when no current request is queued or
  running, and one unit at a time, so a worker is always free for the user's next request after at
  most one small unit. A job that should not outlive the user's next action is created with
  ``cancel_on_request=True`` (e.g. computing the other classes ahead); the others (e.g. a comparison
  grid) pause while the user's requests run and resume afterwards.
* running calls cannot be interrupted (a TensorFlow call runs to its end); :meth:`~Scheduler.cancel`
  makes the running request stale and drops what is queued, so nothing of it is shown.

With ``workers=2`` a request does not wait for a stale request that is still running: the new one
runs beside it (at most ``workers`` calls at once).

Example
-------
>>> s = Scheduler(workers=2)
>>> shown = []
>>> def show(gen, value):
...     with s.publishing(gen) as current:
...         if current:
...             shown.append(value)
>>> gen = s.request(lambda gen: show(gen, "map"))
>>> s.wait(10)
True
>>> shown
['map']
>>> s.close()
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

log = logging.getLogger(__name__)

#: Background priorities: lower runs first.
COMPARE, PREFETCH = 1, 2


@dataclass(eq=False)
class BackgroundJob:
    """A handle on background work: ``cancel()`` it, read ``done``/``cancelled``."""

    units: Iterator[None]
    priority: int
    cancel_on_request: bool
    name: str = ""
    on_error: Callable[[BaseException], None] | None = None
    seq: int = 0
    cancelled: bool = False
    done: bool = False
    running: bool = False
    finished: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop after the unit in progress (if any); queued units never run."""
        self.cancelled = True


@dataclass(eq=False)
class _Request:
    fn: Callable[[int], None]
    generation: int
    queued_at: float


class Scheduler:
    """Run user requests before background units on a few worker threads (see the module docstring).

    Parameters
    ----------
    workers : int
        Threads, i.e. how many calls may run at once (a stale request and the current one).
    name : str
        Prefix of the worker threads' names.
    """

    def __init__(self, workers: int = 2, name: str = "sglrp-scheduler") -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._cond = threading.Condition()
        self._publish_lock = threading.RLock()
        self._generation = 0
        self._pending: _Request | None = None
        self._running: dict[int, int] = {}  # generation -> running calls of it
        self._jobs: list[BackgroundJob] = []
        self._background_running = 0
        self._seq = 0
        self._closed = False
        self.coalesced = 0  # requests replaced before they started
        self.started: list[tuple[int, float]] = []  # (generation, seconds waited in the queue), last 100
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for th in self._threads:
            th.start()

    # -- generations -----------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """The generation of the latest request (0 before the first)."""
        return self._generation

    def is_current(self, generation: int) -> bool:
        """True while no newer request was made and the request was not cancelled."""
        return generation == self._generation

    @property
    def lock(self) -> threading.RLock:
        """The lock held while publishing; hold it to change shared state consistently with publications."""
        return self._publish_lock

    @contextmanager
    def publishing(self, generation: int):
        """``with s.publishing(gen) as current:`` publish only ``if current``.

        No request can become current while the block runs, so a result checked here is never
        replaced by an older one that finishes later.
        """
        with self._publish_lock:
            yield self.is_current(generation)

    # -- submitting ------------------------------------------------------------------------------
    def request(self, fn: Callable[[int], None]) -> int:
        """Schedule ``fn(generation)`` as the user's latest request; return its generation.

        A request still waiting is dropped (coalesced); background jobs created with
        ``cancel_on_request`` are cancelled; running calls finish but are no longer current.
        """
        with self._publish_lock, self._cond:
            self._generation += 1
            if self._pending is not None:
                self.coalesced += 1
            self._pending = _Request(fn, self._generation, time.perf_counter())
            for job in self._jobs:
                if job.cancel_on_request:
                    job.cancel()
            self._drop_cancelled()
            self._cond.notify_all()
            return self._generation

    def background(self, units: Iterator[None], *, priority: int = PREFETCH, cancel_on_request: bool = False,
                   name: str = "", on_error: Callable[[BaseException], None] | None = None) -> BackgroundJob:
        """Queue ``units`` (an iterator; each ``next()`` runs one small unit of work) at ``priority``."""
        with self._cond:
            self._seq += 1
            job = BackgroundJob(iter(units), priority, cancel_on_request, name, on_error, self._seq)
            if self._closed:
                job.cancel()
                job.finished.set()
                return job
            self._jobs.append(job)
            self._jobs.sort(key=lambda j: (j.priority, j.seq))
            self._cond.notify_all()
            return job

    def cancel(self) -> bool:
        """Cancel the user's request: the queued one never runs, a running one becomes stale.

        Returns True if there was one to cancel. Background jobs are not touched (cancel their handle).
        """
        with self._publish_lock, self._cond:
            had = self._pending is not None or self._running.get(self._generation, 0) > 0
            self._pending = None
            self._generation += 1
            self._cond.notify_all()
            return had

    # -- state -----------------------------------------------------------------------------------
    def request_running(self) -> bool:
        """True while the current request is queued or running."""
        with self._cond:
            return self._pending is not None or self._running.get(self._generation, 0) > 0

    def idle(self) -> bool:
        with self._cond:
            return self._pending is None and not self._running and not self._jobs \
                and self._background_running == 0

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until nothing is queued or running; False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self._pending is None and not self._running and not self._jobs
                       and self._background_running == 0):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_request(self, timeout: float | None = 60.0) -> bool:
        """Block until the current request is neither queued nor running (background work may go on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._running.get(self._generation, 0) > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        """Stop the workers after their current unit; queued work is dropped."""
        with self._cond:
            self._closed = True
            self._pending = None
            for job in self._jobs:
                job.cancel()
            self._drop_cancelled()
            self._cond.notify_all()

    # -- the workers -----------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        keep = []
        for job in self._jobs:
            if job.cancelled and not job.running:
                self._finish(job)
            else:
                keep.append(job)
        self._jobs = keep

    @staticmethod
    def _finish(job: BackgroundJob) -> None:
        close = getattr(job.units, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - a generator's cleanup must not stop the worker
                log.exception("closing background job %s", job.name)
        job.finished.set()

    def _next(self):
        """Under the lock: the next thing to run, or None."""
        if self._pending is not None:
            req, self._pending = self._pending, None
            return req
        current_busy = self._running.get(self._generation, 0) > 0
        if current_busy or self._background_running:
            return None
        for job in self._jobs:
            if not job.running and not job.cancelled:
                return job
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                item = self._next()
                while item is None:
                    if self._closed:
                        return
                    self._cond.wait()
                    item = self._next()
                if isinstance(item, _Request):
                    self._running[item.generation] = self._running.get(item.generation, 0) + 1
                    self.started = (self.started + [(item.generation,
                                                     time.perf_counter() - item.queued_at)])[-100:]
                else:
                    item.running = True
                    self._background_running += 1
            if isinstance(item, _Request):
                self._run_request(item)
            else:
                self._run_unit(item)

    def _run_request(self, req: _Request) -> None:
        try:
            req.fn(req.generation)
        except Exception:  # noqa: BLE001 - the callable reports its own errors; keep the worker alive
            log.exception("request %d failed", req.generation)
        finally:
            with self._cond:
                n = self._running[req.generation] - 1
                if n:
                    self._running[req.generation] = n
                else:
                    del self._running[req.generation]
                self._cond.notify_all()

    def _run_unit(self, job: BackgroundJob) -> None:
        finished = False
        try:
            next(job.units)
        except StopIteration:
            finished = True
        except Exception as exc:  # noqa: BLE001 - reported to the job's owner
            finished = True
            if job.on_error is not None:
                try:
                    job.on_error(exc)
                except Exception:  # noqa: BLE001
                    log.exception("error handler of %s failed", job.name)
            else:
                log.exception("background job %s failed", job.name)
        with self._cond:
            job.running = False
            self._background_running -= 1
            if finished:
                job.done = True
                self._jobs.remove(job)
                job.finished.set()
            self._drop_cancelled()
            self._cond.notify_all()
