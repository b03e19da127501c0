"""One stream's state: what its reader and the analysis report, the series it sets, and its /streams entry."""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from engines.features import WindowResult
from stream.ingest.decode import SourceEvents
from stream.ingest.video_facts import VideoFormat
from stream.live.faults import FAULTS, LiveFaults
from stream.ops.metrics import Metrics
from stream.redact import redact_text

log = logging.getLogger("stream.live.monitor")  # the logger these lines have always had


class _NullMetric:
    def labels(self, *args: str) -> _NullMetric:
        return self

    def set(self, value: float) -> None: ...
    def inc(self, amount: float = 1) -> None: ...


class _NullMetrics:
    """Stands in for Metrics once a stream is removed."""

    def __getattr__(self, name: str) -> _NullMetric:
        return _NullMetric()


_NULL_METRICS = _NullMetrics()


@dataclass
class StreamState(SourceEvents):
    """What is known of one stream; written by its reader thread and the analysis loop, read by HTTP."""

    name: str
    kind: str
    url: str
    metrics: Metrics
    state: str = "starting"  # starting, up, down, ended, error (docs/operations.md, "Stream lifecycle")
    last_error: str | None = None
    width: int = 0
    height: int = 0
    codec: str | None = None
    nominal_fps: float | None = None
    fps: float = 0.0
    bitrate_bps: float = 0.0
    frames_received: int = 0
    last_frame_at: float | None = None
    started_at: float = field(default_factory=time.time)
    _first_frame_at: float | None = None
    latest: WindowResult | None = None
    detached: bool = False  # removed from the monitor: reports from a stopping reader touch no metric
    recommendation: dict[str, Any] | None = None
    ended_at: float | None = None  # monotonic time the stream ended; it leaves after limits.ended_retention_s
    end_reason: str | None = None
    expect: Any = None  # the source's ExpectedFormat (what the channel should carry), or None
    faults: LiveFaults = field(default_factory=LiveFaults)
    expected: bool = False  # the source's `expected`: its publisher leaving makes it `down`, never `ended`
    _error_logged_at: float = -float("inf")
    _errors_held: int = 0
    _bytes: collections.deque = field(default_factory=collections.deque)
    _frames: collections.deque = field(default_factory=collections.deque)
    _rates: collections.deque = field(default_factory=collections.deque)  # (monotonic time, fps) once a second
    _lock: threading.Lock = field(default_factory=threading.Lock)

    RATE_SPAN_S = 3.0
    # A stream that declares no frame rate (WHIP): the rate it has kept (median of the last minute, once it has run
    # 20 s) stands for one while the received rate is under COLLAPSE of it, so a collapse to a few frames a second
    # reads as dropped frames, as it does against an RTMP stream's declared rate.
    CUSTOMARY_SPAN_S, CUSTOMARY_MIN_S, COLLAPSE = 60.0, 20.0, 0.6

    def __post_init__(self) -> None:
        self.faults.expect = self.expect
        for fault in FAULTS:  # every fault's series exists from the start, 0 until seen
            self._m.stream_fault.labels(self.name, fault).set(0)
        self._m.stream_errors.labels(self.name, "decode")  # counted from 0, so increase() sees the first errors
        self._m.frames_corrupt.labels(self.name)

    @property
    def _m(self) -> Metrics | _NullMetrics:
        return _NULL_METRICS if self.detached else self.metrics

    # SourceEvents, called from the reader thread
    def opened(self, width: int, height: int, fps: float | None, codec: str) -> None:
        self.width, self.height, self.nominal_fps, self.codec = width, height, fps, codec
        self._m.stream_width.labels(self.name).set(width)
        self._m.stream_height.labels(self.name).set(height)
        self.last_error = None if self.state != "error" else self.last_error
        if self.faults.nominal_rate(fps, time.monotonic()):
            self._m.format_changes.labels(self.name, "frame_rate").inc()

    def video_format(self, fmt: VideoFormat) -> None:
        changed = self.faults.video_format(fmt, time.monotonic())
        self.width, self.height = fmt.width, fmt.height
        self._m.stream_width.labels(self.name).set(fmt.width)
        self._m.stream_height.labels(self.name).set(fmt.height)
        for aspect in changed:
            self._m.format_changes.labels(self.name, aspect).inc()
        if changed:
            log.warning("stream %s: the format changed (%s): now %s", self.name, ", ".join(changed), fmt.to_json())

    def picture(self, blank_level: int | None) -> None:
        self.faults.picture(blank_level, time.monotonic())

    def decode_damage(self, errors: int, corrupt_frames: int, message: str | None) -> None:
        self.faults.damage(errors, corrupt_frames, time.monotonic())
        if errors:
            self._m.stream_errors.labels(self.name, "decode").inc(errors)
        if corrupt_frames:
            self._m.frames_corrupt.labels(self.name).inc(corrupt_frames)
        if message:
            self.last_error = redact_text(message)
            self._log_error(self.last_error, errors)

    def live_faults(self, now: float | None = None) -> set[str]:
        """The faults the decoder's facts show now (engines.families.FAULT_CAUSES' names); sets fvq_stream_fault."""
        now = time.monotonic() if now is None else now
        running = now - self._first_frame_at if self._first_frame_at is not None else 0.0
        active = self.faults.active(now, self.fps, running) if self.state == "up" else set()
        for fault in FAULTS:
            self._m.stream_fault.labels(self.name, fault).set(1 if fault in active else 0)
        return active

    def packet(self, size: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._bytes.append((now, size))

    def bytes_since(self, t: float) -> int:
        """Media bytes received after monotonic time `t` (within the last few seconds kept for the rates)."""
        with self._lock:
            return sum(size for at, size in self._bytes if at > t)

    def frame(self) -> None:
        now = time.monotonic()
        self.frames_received += 1
        self.last_frame_at = now
        if self._first_frame_at is None:
            self._first_frame_at = now
        with self._lock:
            self._frames.append(now)
        self._m.frames_received.labels(self.name).inc()
        if self.state != "up":
            self.state = "up"
            self._m.stream_up.labels(self.name).set(1)

    ERROR_LOG_INTERVAL_S = 30.0  # a stream's errors are logged at most once per this long, with a count

    def error(self, kind: str, message: str) -> None:
        message = redact_text(message)
        self._log_error(message)
        self.last_error = message
        self._m.stream_errors.labels(self.name, kind).inc()
        if kind not in ("decode", "silent"):  # a silent publisher is down (or ended), not a broken source
            self.mark_down("error")

    def _log_error(self, message: str, count: int = 1) -> None:
        now = time.monotonic()
        if now - self._error_logged_at >= self.ERROR_LOG_INTERVAL_S:
            held = f" [and {self._errors_held} more errors in the last {self.ERROR_LOG_INTERVAL_S:g} s]" \
                if self._errors_held else ""
            log.warning("stream %s: %s%s", self.name, message, held)
            self._error_logged_at, self._errors_held = now, max(0, count - 1)
        else:
            self._errors_held += count

    def reconnecting(self, delay: float) -> None:
        self._m.reconnects.labels(self.name).inc()

    # how a publisher can vanish without saying goodbye (WHIP); the stream reads `down`, not `ended`
    UNCLEAN_ENDS = frozenset({"silent", "disconnected", "undecodable"})

    def ended(self, reason: str | None = None) -> None:
        """The source stopped. An expected stream goes `down` and stays (no retention: it waits for its publisher
        or a delete); a publisher that vanished uncleanly, or stalled before it left, leaves the stream `down`, one
        that said goodbye (or a file that finished) `ended`; both leave after limits.ended_retention_s. A reader that ends on an error
        keeps `error`."""
        self._m.stream_up.labels(self.name).set(0)
        if self.expected:
            self.state, self.end_reason = "down", reason or self.end_reason or "finished"
            return
        if reason in self.UNCLEAN_ENDS or self.state == "down":
            # a publisher that stalled (no frame for analysis.stale_after_s) and was then dropped, by the media
            # server's idle timeout or its own failing link, did not say goodbye: the camera died, not the show
            if self.state == "down" and reason not in self.UNCLEAN_ENDS:
                reason = "stalled"
            self.state = "down"
        elif self.state != "error" or reason is not None:
            self.state = "ended"
        if self.ended_at is None:
            self.ended_at = time.monotonic()
            self.end_reason = reason or self.end_reason or ("error" if self.state == "error" else "finished")

    def mark_down(self, state: str = "down") -> None:
        self.state = state
        self._m.stream_up.labels(self.name).set(0)

    def refresh_rates(self, now: float) -> None:
        cutoff = now - self.RATE_SPAN_S
        with self._lock:
            while self._bytes and self._bytes[0][0] < cutoff:
                self._bytes.popleft()
            while self._frames and self._frames[0] < cutoff:
                self._frames.popleft()
            first = self._first_frame_at if self._first_frame_at is not None else now
            span = min(self.RATE_SPAN_S, max(0.5, now - first))
            self.fps = len(self._frames) / span
            self.bitrate_bps = 8 * sum(size for _, size in self._bytes) / span
            if self._first_frame_at is not None and now - first >= self.RATE_SPAN_S and \
                    (not self._rates or now - self._rates[-1][0] >= 1.0):
                self._rates.append((now, self.fps))
                while self._rates and self._rates[0][0] < now - self.CUSTOMARY_SPAN_S:
                    self._rates.popleft()
        self._m.stream_fps.labels(self.name).set(self.fps)
        self._m.stream_bitrate.labels(self.name).set(self.bitrate_bps)

    def expected_fps(self) -> float | None:
        """The frame rate the windows are judged against: the declared one, else the customary one while the
        received rate has collapsed under it (see CUSTOMARY_SPAN_S), else None (the windows' own median)."""
        if self.nominal_fps:
            return self.nominal_fps
        with self._lock:
            rates = [r for _, r in self._rates]
            span = self._rates[-1][0] - self._rates[0][0] if self._rates else 0.0
        if span < self.CUSTOMARY_MIN_S:
            return None
        customary = sorted(rates)[len(rates) // 2]
        return customary if customary > 0 and self.fps < self.COLLAPSE * customary else None

    def to_json(self) -> dict[str, Any]:
        latest = self.latest
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "state": self.state,
            "last_error": self.last_error,
            "resolution": [self.width, self.height] if self.width else None,
            "codec": self.codec,
            "fps": round(self.fps, 2),
            "bitrate_bps": round(self.bitrate_bps),
            "frames_received": self.frames_received,
            "recommendation": self.recommendation,
            "end_reason": self.end_reason,
            "decoded": self.faults.to_json(time.monotonic()),
            "latest": None,
        }
        if latest is not None:
            out["latest"] = result_json(latest)
        return out


def result_json(r: WindowResult) -> dict[str, Any]:
    return {
        "start": round(r.start, 3),
        "end": round(r.end, 3),
        "score": None if r.score is None else round(r.score, 2),
        "level": r.level,
        "dimensions": {region: {k: round(v, 1) for k, v in dims.items()} for region, dims in r.dimensions.items()},
        "face_presence": round(r.face_presence, 3),
        "face_size": round(r.face_size, 4),
        "identity_stability": None if r.identity_stability is None else round(r.identity_stability, 3),
    }
