"""A stream's timeline: the published score and six dimensions of each window over the last hour, in a fixed ring."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from engines.features import DIMENSIONS, WindowResult

SERIES = ("score", *DIMENSIONS)


def preferred_region(result: WindowResult) -> str:
    """The region a stream's causes are read from: the face when there is one (as the recommendations do)."""
    return "face" if result.dimensions.get("face") else "frame"


class Timeline:
    """Wall time (float64) and score plus dimensions (float16: 0-100 to within 0.06) of the last `points` windows;
    NaN where a value was not measured. Its memory is fixed from the start."""

    def __init__(self, points: int) -> None:
        self.t = np.full(points, np.nan, dtype=np.float64)
        self.values = np.full((points, len(SERIES)), np.nan, dtype=np.float16)
        self._next = 0
        self._count = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self.t.nbytes + self.values.nbytes

    def add(self, at: float, result: WindowResult) -> None:
        dims = result.dimensions.get(preferred_region(result), {})
        row = [np.nan if result.score is None else result.score, *(dims.get(d, np.nan) for d in DIMENSIONS)]
        with self._lock:
            i = self._next
            self.t[i] = at
            self.values[i] = row
            self._next = (i + 1) % len(self.t)
            self._count = min(self._count + 1, len(self.t))

    def since(self, start: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of the windows at or after wall time `start`, oldest first."""
        with self._lock:
            order = np.roll(np.arange(len(self.t)), -self._next)[len(self.t) - self._count:]
            t, v = self.t[order], self.values[order].astype(np.float32)
        keep = t >= start
        return t[keep], v[keep]

    def to_json(self, since_s: float, points: int = 0, now: float | None = None) -> dict[str, Any]:
        """{"t": [...], "score": [...], "blur": [...], ...} over the last `since_s` seconds; with `points`, when
        there are more windows than that, the mean of each of that many equal spans (empty spans null)."""
        import time

        now = time.time() if now is None else now
        t, v = self.since(now - since_s)
        if points and len(t) > points:
            t, v = _buckets(t, v, now - since_s, now, points)
        out: dict[str, Any] = {"t": np.round(t, 3).tolist()}
        for k, name in enumerate(SERIES):
            out[name] = _values(v[:, k]) if len(t) else []
        return out

    def spark(self, since_s: float, points: int, now: float | None = None) -> list[float | None]:
        """The score alone, as the mean of each of `points` equal spans of the last `since_s` seconds."""
        import time

        now = time.time() if now is None else now
        t, v = self.since(now - since_s)
        if not len(t):
            return []
        return _values(_buckets(t, v[:, :1], now - since_s, now, points)[1][:, 0])


def _buckets(t: np.ndarray, v: np.ndarray, start: float, end: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(span centres, the mean of each column's finite values in each span: NaN where none)."""
    edges = np.linspace(start, end, points + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, points - 1)
    finite = np.isfinite(v)
    means = np.empty((points, v.shape[1]))
    for k in range(v.shape[1]):
        sums = np.bincount(idx, np.where(finite[:, k], v[:, k], 0.0), points)
        counts = np.bincount(idx, finite[:, k], points)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, k] = sums / counts
    return (edges[:-1] + edges[1:]) / 2, means


def _values(x: np.ndarray) -> list[float | None]:
    """Rounded to 0.1, NaN as None (JSON null)."""
    rounded = np.round(x.astype(np.float64), 1).tolist()
    return [None if not math.isfinite(r) else r for r in rounded]
