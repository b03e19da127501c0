"""Bounded lanes for control work (stream API changes, hook notifications): own threads, a capped queue, a deadline.

The stream API's handlers run blocking work (starting a reader, asking the front to place a stream) off the event
loop. Run in the loop's default executor, a burst of calls filled every thread with work that itself needed a
thread of that executor (the front's source probe), and every caller hung. Here each kind of work has a lane of
its own threads that nothing else uses; a call that finds the lane's queue full is refused at once (429), and one
that has not started within the lane's wait is taken back from the queue and refused (503): in both cases nothing
was applied, and the answer carries `Retry-After`. A call that has started runs to its end (each step inside has
its own timeout), so what a caller is told is what happened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any


class LaneBusyError(RuntimeError):
    """The lane refused the call without running it: `status` 429 (queue full) or 503 (not started in time)."""

    def __init__(self, message: str, status: int, retry_after_s: int) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class ControlLane:
    """One kind of control work: `threads` threads of its own, at most `max_queued` calls waiting or running."""

    def __init__(self, name: str, threads: int = 1, max_queued: int = 256, start_within_s: float = 4.0,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.max_queued = max_queued
        self.start_within_s = start_within_s
        self.on_refused = on_refused or (lambda reason: None)
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=f"fvq-{name}")
        self._queued = 0
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        return self._queued

    def _done(self, _fut: concurrent.futures.Future) -> None:
        with self._lock:
            self._queued -= 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Queues a call (raises LaneBusyError, 429, when the queue is full)."""
        with self._lock:
            if self._queued >= self.max_queued:
                self.on_refused("busy")
                raise LaneBusyError(f"{self.max_queued} {self.name} calls are already waiting; nothing was applied, "
                                    "try again shortly", 429, 1)
            self._queued += 1
        fut = self._executor.submit(fn, *args)
        fut.add_done_callback(self._done)
        return fut

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs `fn(*args)` on the lane and returns its result; LaneBusyError if it was refused unrun."""
        fut = self.submit(fn, *args)
        wrapped = asyncio.wrap_future(fut)
        done, _ = await asyncio.wait({wrapped}, timeout=self.start_within_s)
        if not done and fut.cancel():  # still queued: taken back, never runs
            self.on_refused("timeout")
            raise LaneBusyError(f"the {self.name} queue did not reach this call within {self.start_within_s:g} s; "
                                "nothing was applied, try again shortly", 503, 2)
        return await wrapped  # started: it runs to its end (bounded by its own timeouts)

    async def run_detached(self, fn: Callable[..., Any], *args: Any, wait_s: float) -> bool:
        """Queues `fn(*args)` and waits at most `wait_s` for it; it runs to its end either way (hooks: the caller
        is always answered 200, so nothing it was told is contradicted). True when it finished within the wait."""
        wrapped = asyncio.wrap_future(self.submit(fn, *args))
        done, _ = await asyncio.wait({wrapped}, timeout=wait_s)
        if done:
            wrapped.result()
        return bool(done)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


MAX_JSON_DEPTH = 32  # a source is 3 levels deep; deeper bodies are refused before anything walks them


def json_depth_exceeded(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit` (counted without parsing, strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False
