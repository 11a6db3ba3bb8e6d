"""Micro-batching: concurrent requests grouped into one forward pass, run off the event loop.

A request takes an admission slot first (:meth:`MicroBatcher.admit`; none left: :class:`Overloaded`, which
the app answers with 503 + Retry-After), so the requests being read, decoded, queued or run are bounded and
memory with them. A queued item waits at most ``max_wait_ms`` for others to join its batch (at most
``max_batch``); while the model runs in its thread, the next requests queue up and form the next batch.
:meth:`MicroBatcher.stop` lets the queued and running work finish, then stops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class Overloaded(Exception):
    """No admission slot left (or the server is stopping): answer 503 and ask the client to retry."""


class MicroBatcher:
    """``fn(items) -> results`` (same length, in order) runs in one thread, one batch at a time.

    ``observe(batch_size, seconds)`` is called after each batch and ``observe_wait(seconds)`` once per item
    with the time it waited in the queue before its batch started (metrics)."""

    def __init__(
        self,
        fn: Callable[[list], list],
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        capacity: int = 64,
        observe: Callable[[int, float], None] | None = None,
        observe_wait: Callable[[float], None] | None = None,
    ):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.capacity, self.observe, self.observe_wait = capacity, observe, observe_wait
        self.admitted = 0  # requests holding a slot
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = self._stopped = False
        self.running = 0  # items in the batch the model is running now

    @property
    def depth(self) -> int:
        """Items queued for the model (not yet in a running batch)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vestis-model")
        self._closing = self._stopped = False
        self._task = asyncio.create_task(self._loop(), name="vestis-batcher")

    @contextlib.contextmanager
    def admit(self):
        """A slot for one request, held until its response is ready; raises :class:`Overloaded`."""
        if self._closing or self._task is None:
            raise Overloaded("the server is stopping")
        if self.admitted >= self.capacity:
            raise Overloaded(f"the server is busy ({self.capacity} requests in progress)")
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def submit(self, item):
        """Run ``item`` in a batch and return its result (an exception from ``fn`` is raised here)."""
        if self._queue is None or self._task is None or self._stopped:
            raise Overloaded("the server is stopping")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut, time.perf_counter()))
        return await fut

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is None:  # stop(): everything queued before it has been run
                return
            batch, stop = [first], False
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            live = [entry for entry in batch if not entry[1].done()]  # a cancelled request is skipped
            if live:
                await self._run(live)
            if stop:
                return

    async def _run(self, batch: list) -> None:
        self.running = len(batch)
        t0 = time.perf_counter()
        if self.observe_wait:
            for _, _, queued in batch:
                self.observe_wait(t0 - queued)
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._pool, self.fn, [item for item, _, _ in batch]
            )
        except Exception as e:  # the model failed: every request of the batch gets the error
            for _, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(e)
        else:
            for (_, fut, _), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        finally:
            self.running = 0
            if self.observe:
                self.observe(len(batch), time.perf_counter() - t0)

    async def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests, let the admitted ones finish (for at most ``timeout`` seconds), stop."""
        self._closing = True
        end = time.monotonic() + timeout
        while self.admitted and time.monotonic() < end:
            await asyncio.sleep(0.01)
        if self._task is not None and self._queue is not None:
            self._stopped = True
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._task = None
