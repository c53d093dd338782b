"""Loader: one embedded model's engine, loaded in the background and released when idle.

    unloaded ──start()──▶ loading ──▶ ready ──(idle for keep_alive)──▶ unloaded ──▶ loading ...
                              └──────▶ failed (every request is refused, naming why)

The server starts the load of every embedded model as it starts and answers HTTP at once; a
request for a model that is not loaded yet waits for it (`acquire`), as Ollama's do, up to
`timeout` seconds, then gets ModelLoadingError (503). Building an engine is torch work that
holds a thread for seconds, so it runs in a thread of its own, never on the event loop.

Each request holds the engine from `acquire` to `release`; `release(keep_alive)` also sets how
long the model stays loaded once idle (Ollama's `keep_alive`: the request's, else the model's
own; FOREVER keeps it). A keeper thread waits for the idle deadline and releases the engine:
`unload` drops the last reference, the garbage collector runs, and the weights and KV cache are
freed. The next request loads it again. A failed load is final: the server must be restarted
after the model directory is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

import psutil

from tenshu.core.errors import ModelLoadError, ModelLoadingError
from tenshu.core.keep_alive import FOREVER

log = logging.getLogger("tenshu.loading")
T = TypeVar("T")

DEFAULT_TIMEOUT = 300.0  # a request waits this long for a model that is loading


class Loader(Generic[T]):
    def __init__(self, name: str, load: Callable[[], T], unload: Callable[[T], None], *,
                 keep_alive: float = FOREVER, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.keep_alive = keep_alive  # the model's own; a request's keep_alive overrides it
        self.timeout = timeout
        self.loads = 0  # engines built so far (a reload counts)
        self._load, self._unload, self._clock = load, unload, clock
        self._cond = threading.Condition()  # guards everything below
        self._future: Future[T] | None = None  # the current load; None: unloaded
        self._freed: Future[None] | None = None  # the last unload, until its memory is freed
        self._in_flight = 0
        self._session = keep_alive  # the keep_alive of the last request (Ollama's session)
        self._idle_since = 0.0  # clock(): when the engine last became idle
        self._closed = False
        self._keeper: threading.Thread | None = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """"loading", "ready", "unloaded" or "failed: why"."""
        future = self._future
        if future is None:
            return "unloaded"
        if not future.done():
            return "loading"
        error = future.exception()
        return "ready" if error is None else f"failed: {_why(error)}"

    @property
    def has_loaded(self) -> bool:
        """Whether a load has succeeded (the model may have been unloaded since)."""
        return self.loads > 0

    @property
    def value(self) -> T | None:
        """The loaded engine, or None."""
        future = self._future
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()

    def expires_in(self) -> float | None:
        """Seconds until an idle unload (FOREVER: never); None when not loaded. While requests
        run, the count starts when the last of them ends."""
        with self._cond:
            if self.value is None:
                return None
            if self._in_flight or self._session == FOREVER:
                return self._session
            return max(0.0, self._idle_since + self._session - self._clock())

    # -- load, use, unload ----------------------------------------------------------------------

    def start(self) -> Future[T]:
        """Begin loading unless loaded or loading already; the load's future."""
        with self._cond:
            if self._future is None:
                future: Future[T] = Future()
                self._future = future
                threading.Thread(target=self._build, args=(future, self._freed), daemon=True,
                                 name=f"tenshu-load-{self.name}").start()
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, daemon=True,
                                                name=f"tenshu-keep-{self.name}")
                self._keeper.start()
            return self._future

    async def acquire(self) -> T:
        """The engine, loaded first if need be (waiting up to `timeout`); hold it until
        `release`. Raises ModelLoadingError on timeout, ModelLoadError for a failed load."""
        with self._cond:
            self._in_flight += 1  # from now on the keeper leaves the engine alone
        ok = False
        try:
            future = self.start()
            try:
                if not future.done():
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                           self.timeout)
                value = future.result()
            except TimeoutError:
                raise ModelLoadingError(
                    f"{self.name} is still loading after {self.timeout:g} s; retry in a "
                    "moment (server.load_timeout sets how long a request waits)") from None
            except Exception as exc:  # the server's model, not the client's request: a 500
                raise ModelLoadError(f"{self.name} could not be loaded: {_why(exc)}") from None
            ok = True
            return value
        finally:
            if not ok:
                self.release()

    def release(self, keep_alive: float | None = None) -> None:
        """A request is done with the engine; `keep_alive` (None: the model's own) is how long
        the engine stays loaded once no request holds it."""
        with self._cond:
            self._in_flight -= 1
            self._session = self.keep_alive if keep_alive is None else keep_alive
            self._idle_since = self._clock()
            self._cond.notify_all()

    async def unload(self, wait: float = 30.0) -> None:
        """Unload as soon as no request holds the engine (Ollama's keep_alive 0); when none
        does, return once the memory is freed (waiting at most `wait` seconds)."""
        with self._cond:
            self._session, self._idle_since = 0.0, self._clock()
            self._cond.notify_all()
            busy = self._in_flight
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unloaded(), wait)

    async def _unloaded(self) -> None:
        while True:
            with self._cond:
                future, freed = self._future, self._freed
            if future is not None and (not future.done() or future.exception() is not None):
                return  # loading (again), or failed: nothing to wait for
            if future is None and (freed is None or freed.done()):
                return
            if future is None:
                await asyncio.wrap_future(freed)
            else:
                await asyncio.sleep(0.01)  # the keeper has yet to see the new deadline

    def close(self) -> None:
        """Release the engine (and one still loading, once it is built); stop the keeper."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            future, self._future = self._future, None
        if future is not None:
            future.add_done_callback(self._release_built)

    # -- the threads ----------------------------------------------------------------------------

    def _build(self, future: Future[T], freed: Future[None] | None) -> None:
        if freed is not None:
            freed.result()  # the last engine's memory is free before the next one takes it
        future.set_running_or_notify_cancel()
        started = time.perf_counter()
        try:
            value = self._load()
        except BaseException as exc:  # noqa: BLE001 (the model is reported failed, by name)
            log.error("%s could not be loaded: %s", self.name, _why(exc))
            future.set_exception(exc)
            return
        if gc.get_freeze_count():
            _freeze_loaded()
        log.info("%s loaded in %.1f s", self.name, time.perf_counter() - started)
        with self._cond:
            self.loads += 1
            self._idle_since = self._clock()
            future.set_result(value)  # under the lock: the keeper sees it loaded when it wakes
            self._cond.notify_all()

    def _keep(self) -> None:
        """Release the engine once it has been idle for the session's keep_alive."""
        with self._cond:
            while not self._closed:
                future = self._future
                loaded = future is not None and future.done() and future.exception() is None
                if not loaded or self._in_flight or self._session == FOREVER:
                    self._cond.wait()
                    continue
                wait = self._idle_since + self._session - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._future, self._freed = None, Future()
                freed = self._freed
                self._cond.release()
                try:
                    self._free(future.result(), freed)
                finally:
                    self._cond.acquire()

    def _free(self, value: T, freed: Future[None]) -> None:
        rss = _rss_mib()
        try:
            self._unload(value)
            del value
            _refreeze()
            log.info("%s unloaded after its keep_alive (RSS %.0f -> %.0f MiB)", self.name, rss,
                     _rss_mib())
        except Exception:
            log.exception("%s: releasing the engine failed", self.name)
        finally:
            freed.set_result(None)

    def _release_built(self, future: Future[T]) -> None:
        if future.exception() is None:
            self._unload(future.result())


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.removeprefix("the engine failed: ")


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / (1 << 20)


def _freeze_loaded() -> None:
    """In a server that froze its start-up heap (api/server.py's settle_heap), freeze the engine
    just loaded too, once what its load left over is collected. The collection walks only what
    is not frozen, the engine and that garbage: with the heap unfrozen first it walked all of
    it, a quarter to half a second of every load, the server's start included."""
    gc.collect()
    gc.freeze()


def _refreeze() -> None:
    """Collect, so that an unloaded engine's memory is given back. A server that froze its
    start-up heap (api/server.py's settle_heap: frozen objects are never collected) gets it
    frozen again, the engine just loaded included, after a full collection."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    else:
        gc.collect()
