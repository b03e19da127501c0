"""Gives the C allocator's free memory back to the system now and then: a long-running server's RSS follows what it holds."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def malloc_trim_function() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - a process always has a C library
        return None
    fn = getattr(libc, "malloc_trim", None)
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)


def limit_arenas(count: int) -> bool:
    """mallopt(M_ARENA_MAX, count): threads share at most `count` malloc arenas (glibc's default: 8 per core,
    one per thread in practice, each keeping its own free memory). glibc fixes the limit when the ninth arena
    would be made, so call this before the process starts its threads. True when glibc took it."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover
        return False
    mallopt = getattr(libc, "mallopt", None)
    if count <= 0 or mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))


class AllocatorTrimmer:
    """Calls malloc_trim(0) every `every_s` seconds in its own thread (ctypes lets the GIL go meanwhile).

    glibc keeps memory that threads freed in their arenas (one per thread, up to 8 per core) and gives back only
    a free top of each; a backlog's large batches (frames, model activations) leave tens of MiB there, which the
    next backlog reuses but the system never gets back: RSS rises in steps and stays. malloc_trim(0) returns
    every whole free page of every arena: ~1 ms when there is little to give back, tens of ms after a burst."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.trims = 0  # calls made
        self.released = 0  # calls that gave memory back
        self._trim = malloc_trim_function()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim(self) -> bool:
        """One malloc_trim(0); True when it gave memory back."""
        if self._trim is None:
            return False
        self.trims += 1
        released = bool(self._trim(0))
        self.released += released
        return released

    def start(self) -> AllocatorTrimmer:
        if self.every_s > 0 and self._trim is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
            self._thread.start()
        elif self.every_s > 0 and self._trim is None:
            log.info("this C library has no malloc_trim: freed memory is given back only as the allocator sees fit")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.trim()
            except Exception:  # pragma: no cover - a failed trim must not end the server; logged once a period
                log.exception("malloc_trim failed")
