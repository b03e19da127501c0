"""Sliding windows by presentation time: length L, hop H, closed when a later frame or the end arrives."""

from __future__ import annotations

import collections
import math
import time

import numpy as np

from engines.features import FrameRecord, Window
from engines.signals import thumb_change
from stream.config import WindowConfig


class WindowAssembler:
    """Collects one stream's frames and emits the windows [k*H, k*H + L) that are complete.

    A window closes when a frame at or past its end arrives, so a stall (a timestamp gap) closes it with
    the frames it had; the gap itself is what the temporal measurements see. Frames are shared by every
    window that holds them, never copied, and each frame's change from the one before it (the temporal
    measurements' per-pair input) is measured once here, as it arrives. When the stream ends, a stream too short
    for a full window still yields one window over what it had.
    """

    def __init__(self, stream: str, cfg: WindowConfig, max_gap_s: float = 30.0) -> None:
        self.stream = stream
        self.length = cfg.length_s
        self.hop = cfg.hop_s
        self.max_gap = max_gap_s
        self._frames: collections.deque[FrameRecord] = collections.deque()
        self._next_start: float | None = None  # start of the oldest window not yet emitted
        self.emitted = 0
        self._received = 0
        self._last_thumb: np.ndarray | None = None  # the previous frame's thumbnail

    def add(self, record: FrameRecord) -> list[Window]:
        record.seq = self._received
        self._received += 1
        if self._last_thumb is not None:
            record.change = thumb_change(self._last_thumb, record.thumb)
        self._last_thumb = record.thumb
        if self._next_start is None:
            self._next_start = math.floor(record.pts / self.hop) * self.hop
        elif self._frames and record.pts - self._frames[-1].pts > self.max_gap:
            # a very long silence: a new session of the stream, not one window per hop of nothing
            closed = self._close_upto(self._frames[-1].pts + self.length)
            self._frames.clear()
            self._next_start = math.floor(record.pts / self.hop) * self.hop
            self._frames.append(record)
            return closed
        closed = self._close_upto(record.pts)
        self._frames.append(record)
        return closed

    def _close_upto(self, pts: float) -> list[Window]:
        out: list[Window] = []
        assert self._next_start is not None
        now = time.monotonic()
        while self._next_start + self.length <= pts + 1e-9:
            start, end = self._next_start, self._next_start + self.length
            frames = [f for f in self._frames if start - 1e-9 <= f.pts < end - 1e-9]
            if frames:
                out.append(Window(self.stream, start, end, frames, closed_at=now))
                self.emitted += 1
            self._next_start += self.hop
            while self._frames and self._frames[0].pts < self._next_start - 1e-9:
                self._frames.popleft()
        return out

    def finish(self) -> list[Window]:
        """The stream ended: windows complete up to the last frame close; a stream that never filled a window
        gets one over everything it had."""
        out: list[Window] = []
        if len(self._frames) >= 2:
            # the last frame lasts one frame interval: a window ending there is complete
            interval = self._frames[-1].pts - self._frames[-2].pts
            out.extend(self._close_upto(self._frames[-1].pts + min(interval, 0.5)))
        if self.emitted == 0 and self._frames:
            first, last = self._frames[0].pts, self._frames[-1].pts
            out.append(Window(self.stream, first, max(last, first) + 1e-3, list(self._frames), time.monotonic()))
            self.emitted += 1
        self._frames.clear()
        self._next_start = None
        self._last_thumb = None
        return out

    @property
    def pending_frames(self) -> list[FrameRecord]:
        return list(self._frames)
