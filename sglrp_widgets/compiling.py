"""Passes that answer at once as Python and compile themselves in the background.

Compiling a pass of a large model costs seconds: TensorFlow builds its graph op by op in Python, then
optimises and instantiates it on its first run. Running the same Python eagerly costs a fraction of that (the
first SGLRP call on EfficientNetB0 at batch 1: about 4.5 s compiled, 1.3 s eagerly), though each later call
is slower eagerly (0.2 s compiled, 0.7 s eagerly). A :class:`Pass` serves both:

- ``"background"``: calls run as Python until the compiled pass is ready. After a call the caller asks
  :meth:`Pass.compile_soon`; one worker thread traces the pass and runs it once on (one image of) the arguments
  of its last call, so that TensorFlow instantiates it there and not in the next call; the most recently asked
  pass first. Compiled and eager passes compute the same sums, equal to float32 rounding.
- ``"first_call"``: the first call compiles the pass and the caller waits, as for any ``tf.function``; for
  batch jobs, which make many calls in a row.

Callers mark their calls with :func:`serving`; while one runs, the worker waits at the next node it traces
(:func:`yield_to_callers`) and before a warm-up, up to ``PAUSE_BUDGET_S`` per pass. Python threads share one
interpreter lock: beside the tracing thread, a class switch on EfficientNetB0 took 1.0-1.2 s instead of its
0.23 s as Python.

An Explainer's ``compile="auto"`` picks one of the two per model (``engine.HEAVY_NODE_MACS``). Under
``tf.config.run_functions_eagerly(True)`` nothing is compiled. At interpreter exit the worker finishes
the step it is in and starts no other.
"""
from __future__ import annotations

import atexit
import contextlib
import inspect
import threading
import time
import warnings
import weakref
from typing import Callable

import tensorflow as tf

MODES = ("background", "first_call")


class Pass:
    """``fn`` (a function of tensors and lists of tensors) served eagerly or compiled (see the module).

    ``signature``: the ``tf.function`` input signature; by default the first call's arguments with a free
    leading (batch) dimension. ``counter`` wraps ``fn`` for tracing (the explainer counts its traces). ``fn`` is
    traced without autograph: loops over tensors are written as ``tf.while_loop``. ``warm_args``
    maps a call's arguments to the smaller ones the worker runs the compiled pass on once (one image of a
    batch: the warm-up runs beside the caller's next calls and should not hold a second batch's state).
    """

    def __init__(self, fn: Callable, *, mode: str = "background", signature: list | None = None,
                 counter: Callable | None = None, warm_args: Callable | None = None):
        if mode not in MODES:
            raise ValueError(f"compile must be one of {', '.join(MODES)}; got {mode!r}.")
        self._fn = fn
        self._traced = counter(fn) if counter is not None else fn
        self._signature = signature
        self._warm_args = warm_args
        self.mode = mode
        self.function = None            # the tf.function, once compiling started
        self._call = None               # its concrete function, called with flattened arguments
        self._example = None            # the last call's arguments, until the worker compiles
        self._queued = False
        self._done = threading.Event()  # set once compiled (or failed): what wait() waits for
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    @property
    def compiled(self) -> bool:
        return self._call is not None

    def __call__(self, *args):
        if tf.config.functions_run_eagerly():
            return self._fn(*args)
        if self._call is not None:
            return self._call(*args)
        if self.mode == "first_call":
            return self.compile(args)(*args)
        if not self._queued:
            self._example = args
        return self._fn(*args)

    def compile(self, example: tuple, *, warm: bool = False):
        """Trace the pass for arguments like ``example`` (tensors or specs) once; with ``warm``, run it on
        ``example``. Returns the compiled call."""
        with self._lock:
            if self._call is None:
                if self.function is None:
                    signature = self._signature if self._signature is not None else \
                        [free_batch_spec(a) for a in example]
                    self.function = tf.function(self._traced, input_signature=signature,
                                                autograph=False)
                with quiet_retracing_notices():
                    call = flat_caller(self.function.get_concrete_function())
                if warm and not _WORKER.closing:
                    yield_to_callers()
                    call(*(self._warm_args(*example) if self._warm_args is not None else example))
                self._call = call
                self._done.set()
            return self._call

    def compile_soon(self) -> None:
        """Queue this pass for the worker (``"background"``; after a call that ran it eagerly)."""
        if self.mode == "background" and self._call is None and self._example is not None \
                and not self._queued and self.error is None:
            self._queued = _WORKER.submit(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a queued compilation; ``True`` if the pass now runs compiled."""
        if self._queued:
            self._done.wait(timeout)
        return self.compiled

    def _compile_queued(self) -> None:
        example, self._example = self._example, None
        try:
            self.compile(example, warm=True)
        except Exception as exc:  # noqa: BLE001 - the pass keeps running as Python, correct but slower
            self.error = exc
            self._done.set()
            warnings.warn(f"A pass of sglrp_widgets could not be compiled and keeps running uncompiled (slower): "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=1)


_serving = 0                             # explainer calls in progress, in any thread
_in_worker = threading.local()           # in the worker's thread: .yes, and .budget left for its pass
_idle = threading.Condition()
#: How long the worker may wait for callers while compiling one pass, in all: enough for a few clicks made while
#: it compiles, not so long that a script making calls back to back runs them as Python for long.
PAUSE_BUDGET_S = 2.0


@contextlib.contextmanager
def serving():
    """Mark a caller's call: the worker pauses its tracing until no call is in progress."""
    global _serving
    with _idle:
        _serving += 1
    try:
        yield
    finally:
        with _idle:
            _serving -= 1
            if not _serving:
                _idle.notify_all()


def yield_to_callers() -> None:
    """In the worker thread, wait while any caller's call is in progress (up to the pass's ``PAUSE_BUDGET_S``
    in all); elsewhere nothing. The passes call it once per node, so a trace pauses within a node's time of a
    caller arriving."""
    if not _serving or not getattr(_in_worker, "yes", False) or _in_worker.budget <= 0:
        return
    start = time.monotonic()
    with _idle:
        _idle.wait_for(lambda: not _serving, timeout=_in_worker.budget)
    _in_worker.budget -= time.monotonic() - start


def free_batch_spec(value):
    """A ``TensorSpec`` like ``value`` (a tensor, a spec or a list of them) with a free leading dimension."""
    if isinstance(value, (list, tuple)):
        return [free_batch_spec(v) for v in value]
    shape = list(value.shape)
    return tf.TensorSpec([None] * min(len(shape), 1) + shape[1:], value.dtype)


class _Worker:
    """One daemon thread compiling queued passes, the latest first; passes nobody holds are skipped."""

    def __init__(self):
        self._stack: list = []
        self._cv = threading.Condition()
        self.thread: threading.Thread | None = None
        self.closing = False

    def submit(self, p: Pass) -> bool:
        """Queue ``p``; ``False`` once closing (nothing will compile it)."""
        with self._cv:
            if self.closing:
                return False
            self._stack.append(weakref.ref(p))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="sglrp-widgets-compile", daemon=True)
                self.thread.start()
            self._cv.notify()
            return True

    def _run(self) -> None:
        _in_worker.yes = True
        while True:
            with self._cv:
                while not self._stack and not self.closing:
                    self._cv.wait()
                if self.closing:
                    return
                p = self._stack.pop()()
            if p is not None:
                _in_worker.budget = PAUSE_BUDGET_S
                p._compile_queued()
            del p

    def close(self) -> None:
        """Start nothing more; wait for the step under way (interpreter exit)."""
        with self._cv:
            self.closing = True
            self._stack.clear()
            self._cv.notify_all()
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


_WORKER = _Worker()
atexit.register(_WORKER.close)


def flat_caller(concrete):
    """Call a traced pass with its inputs flattened, past ``tf.function``'s matching of every argument against
    its signature: with a hundred state tensors that costs 3-4 ms per call, more than a ViT's whole backward
    pass. The check is redundant here: the engine passes its own state, float32 heads and images already
    checked against the model's input shape. Uses TensorFlow's ``_call_flat`` (TF 2.16-2.21) where it has the
    expected form, the concrete function's public call otherwise."""
    call_flat = getattr(concrete, "_call_flat", None)
    try:
        expected = list(inspect.signature(call_flat).parameters) == ["tensor_inputs", "captured_inputs"]
    except (TypeError, ValueError):
        expected = False
    if not expected:
        return concrete
    return lambda *args: call_flat(tf.nest.flatten(args), concrete.captured_inputs)


class quiet_retracing_notices:
    """Drop TensorFlow's "triggered tf.function retracing" notice while a pass is being compiled or run.

    Every Explainer owns its own tf.function; TensorFlow counts traces of same-named functions across
    instances and would warn a notebook user who compares several methods, although nothing retraces. A filter
    on TensorFlow's logger, installed once, drops that one notice while any explainer (in any thread) is
    inside; other messages pass, and no logger level is touched (setting one walks every logger, on every
    call).
    """
    _lock = threading.Lock()
    _depth = 0
    _installed = False

    @classmethod
    def _keep(cls, record) -> bool:
        return not (cls._depth and "triggered tf.function retracing" in record.getMessage())

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if not cls._installed:
                tf.get_logger().addFilter(cls._keep)
                cls._installed = True
            cls._depth += 1

    def __exit__(self, *exc):
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
        return False
