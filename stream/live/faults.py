"""Live faults of one stream read from what its decoder saw: a blank picture, transport damage, a rendition
down-switch and a format change (against the stream's own recent past, or against the source's `expect`)."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

from engines.families import BLACK_PICTURE, FORMAT_CHANGE, RENDITION_DOWN, TRANSPORT_DAMAGE
from stream.ingest.video_facts import BLACK_LEVEL, VideoFormat

DAMAGE_SPAN_S = 4.0  # decoder errors within this long (a window) make the stream's transport damaged...
DAMAGE_MIN_ERRORS = 2  # ...when there are at least this many (error lines and corrupt frames)
BLANK_MIN_S = 0.5  # a blank picture held this long is the fault (a fade through black is shorter)
RECENT_PAST_S = 300.0  # a format held this long is the stream's normal: an older one is no longer compared with
CHANGE_HOLD_S = 60.0  # a change of pixel format or colour space against the recent past is a fault this long
RENDITION_DROP = 0.75  # a coded area below this share of the recent past's largest (or the expected) is a down-switch
FPS_TOLERANCE = 0.15  # frames received this far off the expected rate (after FPS_SETTLE_S) is a change
FPS_SETTLE_S = 5.0
FORMAT_ASPECTS = ("size", "pixel_format", "colour_space", "frame_rate")  # the `what` of fvq_stream_format_changes_total
FAULTS = (BLACK_PICTURE.name, TRANSPORT_DAMAGE.name, RENDITION_DOWN.name, FORMAT_CHANGE.name)


@dataclass
class _Segment:
    fmt: VideoFormat
    since: float
    until: float | None = None  # None: the current format


class LiveFaults:
    """One stream's faults from its reader's facts. Written by the reader thread, read by the recommendation tick;
    times are the caller's monotonic clock."""

    def __init__(self, expect: Any = None) -> None:
        self.expect = expect  # stream.config.ExpectedFormat or None
        self._lock = threading.Lock()
        self._damage: collections.deque[tuple[float, int]] = collections.deque()
        self.blank_since: float | None = None
        self.blank_level: int | None = None
        self._segments: collections.deque[_Segment] = collections.deque(maxlen=32)
        self._changed: dict[str, float] = {}  # aspect -> when it last changed against the recent past
        self.decode_errors = 0
        self.corrupt_frames = 0

    # facts
    def damage(self, errors: int, corrupt: int, now: float) -> None:
        with self._lock:
            self.decode_errors += errors
            self.corrupt_frames += corrupt
            self._damage.append((now, errors + corrupt))

    def picture(self, blank_level: int | None, now: float) -> None:
        self.blank_level = blank_level
        self.blank_since = now if blank_level is not None else None

    def video_format(self, fmt: VideoFormat, now: float) -> list[str]:
        """Records the stream's new format; returns the aspects that changed against the one before."""
        with self._lock:
            before = self._segments[-1].fmt if self._segments else None
            if self._segments:
                self._segments[-1].until = now
            self._segments.append(_Segment(fmt, now))
            if before is None:
                return []
            changed = []
            if (fmt.width, fmt.height) != (before.width, before.height):
                changed.append("size")
            if fmt.pixel_format != before.pixel_format:
                changed.append("pixel_format")
            if (fmt.colour_space, fmt.colour_range) != (before.colour_space, before.colour_range):
                changed.append("colour_space")
            for aspect in changed:
                self._changed[aspect] = now
            return changed

    def nominal_rate(self, fps: float | None, now: float) -> bool:
        """The frame rate the container declares at each (re)open; True when it differs from the last one's."""
        before, self._nominal = self._nominal, fps
        if before and fps and abs(fps - before) > FPS_TOLERANCE * before:
            self._changed["frame_rate"] = now
            return True
        return False

    _nominal: float | None = None

    # what they mean now
    def active(self, now: float, fps: float = 0.0, running_s: float = 0.0) -> set[str]:
        """The faults seen now (names of engines.families.FAULT_CAUSES)."""
        out = set()
        if self.blank_since is not None and now - self.blank_since >= BLANK_MIN_S:
            out.add(BLACK_PICTURE.name)
        with self._lock:
            while self._damage and self._damage[0][0] < now - DAMAGE_SPAN_S:
                self._damage.popleft()
            if sum(n for _, n in self._damage) >= DAMAGE_MIN_ERRORS:
                out.add(TRANSPORT_DAMAGE.name)
            current = self._segments[-1].fmt if self._segments else None
            past = [s.fmt for s in self._segments if s.until is None or s.until >= now - RECENT_PAST_S]
        if current is None:
            return out
        reference = max(f.area for f in past)
        e = self.expect
        if e is not None and e.width and e.height:
            reference = e.width * e.height
        if current.area < RENDITION_DROP * reference:
            out.add(RENDITION_DOWN.name)
        if any(now - self._changed.get(a, -1e18) < CHANGE_HOLD_S for a in ("pixel_format", "colour_space", "frame_rate")):
            out.add(FORMAT_CHANGE.name)
        if e is not None:
            if e.pixel_format and current.pixel_format != e.pixel_format:
                out.add(FORMAT_CHANGE.name)
            if (e.width and current.width != e.width or e.height and current.height != e.height) \
                    and RENDITION_DOWN.name not in out:
                out.add(FORMAT_CHANGE.name)
            if e.fps and running_s >= FPS_SETTLE_S and abs(fps - e.fps) > FPS_TOLERANCE * e.fps:
                out.add(FORMAT_CHANGE.name)
        return out

    def to_json(self, now: float) -> dict[str, Any]:
        current = self._segments[-1].fmt if self._segments else None
        return {
            "format": current.to_json() if current is not None else None,
            "blank": self.blank_level is not None,
            "black": self.blank_level is not None and self.blank_level <= BLACK_LEVEL,
            "decode_errors": self.decode_errors,
            "corrupt_frames": self.corrupt_frames,
            "recent_decode_errors": sum(n for t, n in list(self._damage) if t >= now - DAMAGE_SPAN_S),
        }
