"""What the front places: the workers it places on, one stream's placement, and the cost of a source before it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stream.admission import not_a_regular_file
from stream.config import SourceConfig
from stream.sources import source_type

TICK_S = 0.5
REFERENCE_PIXEL_RATE = 1280 * 720 * 30  # a 720p30 stream: the estimate for a source not opened yet
REFERENCE_COST = 0.12  # CPU-s per second of a 720p30 stream in this monitor (BENCHMARKS.md), until measured
HANG_S = 10.0  # a local worker process alive but silent this long is killed (and restarted)
PROBE_TIMEOUT_S = 3.0  # a source's header read for its cost estimate; past it the reference cost is used
WHIP_GRACE_S = 10.0  # a WHIP stream placed but not yet held by its worker (POST in flight) is kept this long



class Worker(Protocol):
    id: str
    url: str | None
    capacity: float  # CPUs it may use: placement divides load by it
    node: str
    restarts: int  # times its process or actor was restarted


class Pool(Protocol):
    """Worker processes or actors: which are up now, and where they answer."""

    reassign_lost: bool  # a worker that stops answering loses its streams to the others (cluster), or keeps them

    def workers(self) -> dict[str, Worker]: ...
    def kill(self, worker_id: str) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Placement:
    """Where one stream runs, what it costs there, and what its moves cost it."""

    source: SourceConfig
    worker: str
    cost: float  # CPU-s per second, estimated then measured
    pushed: bool  # WHIP: the publisher feeds the worker directly; it cannot be re-added elsewhere
    placed_at: float
    held: bool = False  # the worker reported holding it
    incarnation: str | None = None  # of the worker when it was last seen held
    windows: int = 0
    last_window: float | None = None  # epoch of its last window published (any worker)
    gap_since: float | None = None  # a move or restart interrupted it: the last window before that
    interruptions: int = 0
    last_resume_s: float | None = None  # from the last window before an interruption to the first after
    client: str | None = None  # WHIP: the publisher's address, as the front saw it (the per-client cap)
    state: str | None = None  # as its worker last reported it
    ended: bool = False  # it ended (or its publisher vanished): waits out its retention, holds no slot


def probe_pixel_rate(source: SourceConfig) -> float | None:
    """Width x height x fps of a file source (a cheap header read); None for live sources (not opened here)."""
    if not source_type(source.kind).ends or not_a_regular_file(source) is not None:
        return None  # a FIFO or a device would block the open: never opened here
    try:
        import av

        with av.open(source.url, options=source.options or None, timeout=PROBE_TIMEOUT_S) as c:
            v = c.streams.video[0]
            fps = float(v.average_rate or v.guessed_rate or 25)
            return float(v.codec_context.width * v.codec_context.height * fps)
    except Exception:  # the worker reports the real error when it opens it
        return None
