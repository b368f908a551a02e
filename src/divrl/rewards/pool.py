"""A persistent process pool with a per-call wall-clock timeout, for verifiers that may hang.

Why a process pool: a symbolic verifier (sympy behind math-verify) can spin for minutes on a
pathological answer such as ``9^{9^{9}}``. ``signal.alarm`` only works in the main thread of the main
interpreter and cannot interrupt every C-level loop; a worker process can always be killed. This
follows oat's and TRL's advice (timeouts are the caller's job, through processes).

How it behaves:

* The pool is created on first use and kept for the life of the :class:`TimeoutPool` (no per-call
  process start-up). Start-up is awaited separately (``startup_timeout``), so it never counts against
  a call's timeout.
* :meth:`TimeoutPool.call` runs one function; if it does not finish within ``timeout`` seconds the pool
  is torn down -- its workers are killed, so nothing keeps spinning -- and a fresh pool is started on
  the next call. The caller gets an :class:`Outcome` with ``ok=False`` and a reason, never an exception.
* :meth:`TimeoutPool.map` runs many calls concurrently. A *stall* -- no call finished for ``timeout``
  seconds -- means every call still running has run for at least ``timeout`` seconds (a call only
  starts when another one finishes); the pool is then killed and every unfinished call is rerun on its
  own through :meth:`call`, so a queued call is never blamed for a stuck neighbour. A stuck call thus
  costs about ``2 * timeout``.
* A worker that dies (segfault, out of memory) gives ``ok=False`` with reason ``"worker crashed"``.

Workers ignore SIGINT (Ctrl-C stops the parent, which then shuts the pool down) and are started with
the ``forkserver`` method where available (``spawn`` otherwise): never ``fork``, which is unsafe in a
process that runs torch threads. ``preload`` modules are imported once in the fork server (and in every
worker's initializer) so a restarted worker is ready in milliseconds.

The functions and arguments must be picklable (module-level functions). One pool is meant to be driven
from one thread at a time (calls are serialised by a lock).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

__all__ = ["Outcome", "TimeoutPool"]


@dataclass(frozen=True)
class Outcome:
    """The result of one pooled call.

    Attributes:
        ok: whether the function returned normally within the timeout.
        value: its return value (``None`` when not ``ok``).
        reason: ``"ok"``, ``"timeout: ..."``, ``"worker crashed"`` or ``"error: <Type>: <message>"``
            (the function raised).
    """

    ok: bool
    value: Any
    reason: str


def _init_worker(preload: tuple[str, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    for name in preload:
        with contextlib.suppress(ImportError):  # a missing optional module surfaces on first use, with its own message
            importlib.import_module(name)


def _ping() -> bool:
    return True


class TimeoutPool:
    """A persistent process pool whose calls are killed after a per-call timeout (see module docstring).

    Args:
        workers: worker processes (>= 1).
        start_method: ``"forkserver"`` (default where available) or ``"spawn"``; ``"fork"`` is refused.
        preload: modules to import in the workers before they take work (e.g. a heavy verifier library).
        startup_timeout: seconds to wait for a (re)started pool to answer a ping.
    """

    def __init__(
        self,
        workers: int = 2,
        start_method: str | None = None,
        preload: Sequence[str] = (),
        startup_timeout: float = 120.0,
    ) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        methods = mp.get_all_start_methods()
        if start_method is None:
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method == "fork" or start_method not in methods:
            allowed = [m for m in methods if m != "fork"]
            raise ValueError(
                f"start_method must be one of {allowed} (fork is unsafe with torch), got {start_method!r}"
            )
        if not startup_timeout > 0:
            raise ValueError(f"startup_timeout must be > 0, got {startup_timeout!r}")
        self.workers = workers
        self.start_method = start_method
        self.preload = tuple(preload)
        self.startup_timeout = float(startup_timeout)
        self.restarts = 0
        """How many times a stuck or broken pool was killed and replaced (for logs and tests)."""
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.RLock()

    def __enter__(self) -> TimeoutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._executor is not None else "idle"
        return f"TimeoutPool(workers={self.workers}, start_method={self.start_method!r}, {state})"

    # ----------------------------------------------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Outcome:
        """Run ``fn(*args)`` in a worker; give up after ``timeout`` seconds (killing the worker)."""
        _check_timeout(timeout)
        with self._lock:
            try:
                future = self._submit(fn, args)
            except Exception as exc:  # the pool could not start: unscorable, not fatal
                return Outcome(False, None, f"error: verifier pool unavailable: {type(exc).__name__}: {exc}")
            done, _ = wait([future], timeout=timeout)
            if not done:
                self._kill()
                return Outcome(False, None, f"timeout: no result within {timeout:g}s")
            outcome = _outcome(future)
            if outcome.reason == "worker crashed":
                self._kill()
            return outcome

    def map(self, fn: Callable[..., Any], arg_tuples: Sequence[tuple[Any, ...]], timeout: float) -> list[Outcome]:
        """``[call(fn, *args) for args in arg_tuples]``, run concurrently (stall handling in the module docstring)."""
        _check_timeout(timeout)
        if not arg_tuples:
            return []
        with self._lock:
            results: list[Outcome | None] = [None] * len(arg_tuples)
            try:
                futures = {self._submit(fn, tuple(args)): i for i, args in enumerate(arg_tuples)}
            except Exception:  # fall back to one call at a time (each reports its own failure)
                futures = {}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                if not done:  # a stall: every running call has run >= timeout
                    break
                for future in done:
                    outcome = _outcome(future)
                    if outcome.reason != "worker crashed":  # a crash breaks every pending call: rerun them
                        results[futures[future]] = outcome
            if pending or any(r is None for r in results):
                self._kill()
            return [
                r if r is not None else self.call(fn, *arg_tuples[i], timeout=timeout) for i, r in enumerate(results)
            ]

    def close(self) -> None:
        """Shut the workers down (a later call starts a new pool)."""
        with self._lock:
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    # ----------------------------------------------------------------------------------------------
    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        try:
            return self._ensure_started().submit(fn, *args)
        except BrokenProcessPool:  # a worker died between calls: replace the pool once
            self._kill()
            return self._ensure_started().submit(fn, *args)

    def _ensure_started(self) -> ProcessPoolExecutor:
        if self._executor is not None:
            return self._executor
        context = mp.get_context(self.start_method)
        if self.start_method == "forkserver" and self.preload:
            context.set_forkserver_preload(list(self.preload))  # only effective before the server starts
        executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_worker, initargs=(self.preload,)
        )
        pings = [executor.submit(_ping) for _ in range(self.workers)]  # starts every worker
        done, _ = wait(pings, timeout=self.startup_timeout)
        if len(done) < len(pings) or not all(f.exception() is None for f in done):
            _kill_workers(executor)
            raise RuntimeError(f"verifier worker processes did not start within {self.startup_timeout:g}s")
        self._executor = executor
        return executor

    def _kill(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            _kill_workers(executor)
            self.restarts += 1


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    """Kill every worker of ``executor`` now (a stuck call cannot be cancelled otherwise) and drop it."""
    kill = getattr(executor, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
    else:  # the executor's own process table (stable since Python 3.3, private)
        for process in list(getattr(executor, "_processes", {}).values()):
            process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


def _outcome(future: Future[Any]) -> Outcome:
    exc = future.exception()
    if exc is None:
        return Outcome(True, future.result(), "ok")
    if isinstance(exc, BrokenProcessPool):
        return Outcome(False, None, "worker crashed")
    return Outcome(False, None, f"error: {type(exc).__name__}: {exc}")


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
