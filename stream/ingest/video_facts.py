"""What a decoded stream carries, read cheaply from each frame: its coded format and whether its picture is blank."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np

# AVColorSpace values (libavutil/pixfmt.h) by name: what an operator reads in ffprobe
_COLOUR_SPACES = {0: "rgb", 1: "bt709", 2: "unspecified", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
                  8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 14: "ictcp"}
_RANGES = {0: "unspecified", 1: "tv", 2: "pc"}

# A blank picture (a blacked-out feed, a capture card that lost its input, a "no signal" card): nearly all of the
# luma thumbnail within BLANK_TOLERANCE levels of its median. The thumbnail's area average removes grain, so an
# encoded blank picture is flat to a level or two; a dark but real scene keeps its faces and edges: the carphone
# scene at 0.17 of its luma (105 -> 19) with grain has 25-35% of its thumbnail within 3 levels of the median, at
# 0.08 (luma 16) 52-65%, a presenter on a static background about 5%.
BLANK_TOLERANCE = 3  # luma levels either side of the thumbnail's median
BLANK_SHARE = 0.97  # share of the thumbnail's pixels that must lie within the tolerance (a logo may cover the rest)
BLACK_LEVEL = 40  # a blank picture whose median luma is at most this is black (16 is video black)


@dataclass(frozen=True)
class VideoFormat:
    """The coded format of a stream's decoded frames; a change of any field is a format change."""

    width: int
    height: int
    pixel_format: str
    colour_space: str
    colour_range: str

    @property
    def area(self) -> int:
        return self.width * self.height

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def video_format(frame: av.VideoFrame) -> VideoFormat:
    """The coded format of one decoded frame (a few attribute reads)."""
    return VideoFormat(frame.width, frame.height, frame.format.name,
                       _COLOUR_SPACES.get(int(frame.colorspace), str(int(frame.colorspace))),
                       _RANGES.get(int(frame.color_range), str(int(frame.color_range))))


class FrameFacts:
    """Follows one stream's decoded frames and reports to its events (stream.ingest.decode.SourceEvents) what
    changed: the coded format (at the first frame and at each change) and the picture turning blank or not."""

    def __init__(self, events) -> None:
        self.events = events
        self._format: tuple | None = None
        self._blank: int | None = None

    def observe(self, frame: av.VideoFrame, thumb: np.ndarray) -> None:
        key = format_key(frame)
        if key != self._format:
            self._format = key
            self.events.video_format(video_format(frame))
        level = blank_level(thumb)
        if (level is None) != (self._blank is None):
            self.events.picture(level)
        self._blank = level


def format_key(frame: av.VideoFrame) -> tuple:
    """What video_format reads, as a tuple to compare frame to frame without building a VideoFormat."""
    return frame.width, frame.height, frame.format.name, frame.colorspace, frame.color_range


def blank_level(thumb: np.ndarray) -> int | None:
    """The median luma of a blank thumbnail (see BLANK_SHARE), None when the picture is not blank. Read on every
    other pixel of every other row (a quarter: 576 of a 64x36 thumbnail's pixels), which a blank picture fills as
    it fills the rest."""
    pixels = thumb[::2, ::2].ravel()
    cum = np.cumsum(np.bincount(pixels, minlength=256))
    total = pixels.size
    median = int(np.searchsorted(cum, total / 2))
    lo, hi = max(0, median - BLANK_TOLERANCE), min(255, median + BLANK_TOLERANCE)
    near = cum[hi] - (cum[lo - 1] if lo > 0 else 0)
    return median if near >= BLANK_SHARE * total else None
