"""A stream's own recent past: each dimension's median over the last minutes, and the colour of its light, so that a
fall well below the stream's own level (or a sudden change of its colour) is a cause even where no absolute floor is
crossed, and a stream with an unusual but steady look is judged against itself."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from engines.features import DIMENSIONS, WindowResult
from engines.signals.colour_switch import INVERSE

if TYPE_CHECKING:
    from stream.config import AlertConfig

BELOW_BASELINE = "below_baseline"  # a dimension well below the stream's median of the last baseline_window_s
COLOUR_SHIFT = "colour_shift"  # the light's colour jumped away from the stream's own (white balance, a pipeline)
# the colour pipeline switched between two pictures of the same scene (planes or channels swapped, a range
# conversion changed: engines/signals/colour_switch.py), and has not switched back
COLOUR_SWITCH = "colour_switch"
LIGHT_KEYS = ("light_log_rg", "light_log_bg")  # WindowResult.details: the scene light's log R/G and log B/G


@dataclass
class NewSwitches:
    """The colour switches a stream's windows report ([pts, kind], WindowResult.details) that its earlier windows
    did not: overlapping windows report a switch again, and a stream that starts over (a publisher reconnecting)
    restarts its timestamps, read from its windows' starts going back."""

    last_pts: float = -math.inf
    last_start: float = -math.inf

    def read(self, result: WindowResult) -> tuple[list[tuple[float, str]], bool]:
        """The window's new switches, in order, and whether the stream started over before it."""
        restarted = result.start < self.last_start
        if restarted:
            self.last_pts = -math.inf
        self.last_start = result.start
        new = [(pts, kind) for pts, kind in result.details.get("colour_switches", ()) if pts > self.last_pts]
        if new:
            self.last_pts = new[-1][0]
        return new, restarted


@dataclass
class StreamBaseline:
    """The published values of one stream's recent windows, (end time, value) per dimension and for the light."""

    history: dict[str, deque] = field(default_factory=dict)
    switched: dict[str, float] = field(default_factory=dict)  # switch kind -> when it was seen (wall clock)
    switches: NewSwitches = field(default_factory=NewSwitches)

    def _push(self, key: str, t: float, value: float, window_s: float) -> None:
        h = self.history.setdefault(key, deque())
        h.append((t, value))
        while h and h[0][0] < t - window_s:
            h.popleft()

    def _median_before(self, key: str, t: float, min_history_s: float) -> float | None:
        """The median of the values before `t`, when they span at least `min_history_s`."""
        h = [(ts, v) for ts, v in self.history.get(key, ()) if ts < t]
        if not h or t - h[0][0] < min_history_s:
            return None
        return float(np.median([v for _, v in h]))

    def observe(self, result: WindowResult, cfg: AlertConfig, now: float) -> set[str]:
        """Adds a window published at `now` (wall clock: a stream's timestamps restart when it reconnects) and returns the causes it shows against the stream's own past (judged before it is added):
        BELOW_BASELINE when a dimension of the region the monitor reads (the face's when there is one) is more than
        `baseline_drop_points` below its median, COLOUR_SHIFT when the light's colour moved more than
        `colour_shift` (log-chromaticity) from its median, COLOUR_SWITCH from a colour pipeline switch until the
        switch back (or for `baseline_window_s`: by then the stream's own past is the switched picture)."""
        region = "face" if result.dimensions.get("face") else "frame"
        dims = result.dimensions.get(region, {})
        t = now
        causes: set[str] = set()
        for dim in DIMENSIONS:
            v = dims.get(dim)
            if v is None or not math.isfinite(v):
                continue
            base = self._median_before(dim, t, cfg.baseline_min_history_s)
            if base is not None and base - v > cfg.baseline_drop_points:
                causes.add(BELOW_BASELINE)
        light = [result.details.get(k) for k in LIGHT_KEYS]
        if all(x is not None and math.isfinite(x) for x in light):
            bases = [self._median_before(k, t, cfg.baseline_min_history_s) for k in LIGHT_KEYS]
            if all(b is not None for b in bases):
                moved = math.hypot(*(x - b for x, b in zip(light, bases, strict=True)))  # type: ignore[operator]
                if moved > cfg.colour_shift:
                    causes.add(COLOUR_SHIFT)
            for k, x in zip(LIGHT_KEYS, light, strict=True):
                self._push(k, t, float(x), cfg.baseline_window_s)  # type: ignore[arg-type]
        for dim in DIMENSIONS:
            v = dims.get(dim)
            if v is not None and math.isfinite(v):
                self._push(dim, t, float(v), cfg.baseline_window_s)
        new, restarted = self.switches.read(result)
        if restarted:  # a switch held from before the stream started over says nothing of the new pipeline
            self.switched.clear()
        if self._switched(new, t, cfg.baseline_window_s):
            causes.add(COLOUR_SWITCH)
        return causes

    def _switched(self, new: list[tuple[float, str]], t: float, hold_s: float) -> bool:
        """Reads the window's new colour switches: a switch's inverse (engines.signals.colour_switch.INVERSE) undoes
        it. Whether one is held."""
        for _, kind in new:
            back = INVERSE.get(kind)
            if back in self.switched:
                del self.switched[back]
            else:
                self.switched[kind] = t
        for kind in [k for k, since in self.switched.items() if t - since > hold_s]:
            del self.switched[kind]
        return bool(self.switched)
