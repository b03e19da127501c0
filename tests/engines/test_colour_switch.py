"""A colour pipeline switching mid-stream (engines/signals/colour_switch.py): a swap of the chroma planes or of R and
B, and a limited/full range conversion, read between two pictures of the same scene on real faces and on drawn
avatars (whose swapped picture is a valid drawing on its own); a light, a grade, motion or a cut are no switch; the
stream's baseline holds the switch until it switches back (stream/ops/baseline.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.features import WindowResult
from engines.signals.colour_switch import RANGE_CRUSHED, RANGE_WASHED, SWAP, colour_switch
from stream.config import AlertConfig
from stream.ops.baseline import COLOUR_SWITCH, StreamBaseline
from tests.engines.test_colour_looks import REAL, clip
from train import looks

SOURCES = (*REAL, "avatar-blue", "avatar-skin")
SWITCHES = {"swap-uv": SWAP, "swap-rb": SWAP, "range-washed": RANGE_WASHED, "range-crushed": RANGE_CRUSHED}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("fault", list(SWITCHES))
def test_a_pipeline_switch_between_two_pictures_is_named(source, fault):
    frames, _ = clip(source)
    # the scene moves on between the two pictures (as between two sampled frames) while the pipeline switches
    assert colour_switch(frames[0], looks.apply_fault(frames[1:2], fault, 4)[0]) == SWITCHES[fault]
    # and the switch back is its inverse
    back = colour_switch(looks.apply_fault(frames[0:1], fault, 4)[0], frames[1])
    assert back == (SWAP if SWITCHES[fault] == SWAP else ({RANGE_WASHED, RANGE_CRUSHED} - {SWITCHES[fault]}).pop())


@pytest.mark.parametrize("source", SOURCES)
def test_the_same_pipeline_a_new_look_or_another_colour_fault_is_no_switch(source):
    frames, _ = clip(source)
    assert colour_switch(frames[0], frames[1]) is None
    assert colour_switch(frames[0], frames[2]) is None
    for look in looks.LOOKS:  # a light or a grade switched on: the picture's colour moves, no pipeline switched
        assert colour_switch(frames[0], looks.apply_look(frames[1:2], look)[0]) is None, look
    for fault in ("desaturate", "oversaturate", "tint-green", "tint-magenta", "chroma-offset", "wb-off-locus"):
        # read from the picture itself (engines/signals/colour_pipeline.py), not as a switch
        assert colour_switch(frames[0], looks.apply_fault(frames[1:2], fault, 4)[0]) is None, fault


def test_a_cut_to_another_scene_is_no_switch():
    a, _ = clip("carphone-s0")
    b, _ = clip("avatar-blue")
    assert colour_switch(a[0], b[0]) is None
    assert colour_switch(a[0], np.ascontiguousarray(a[0, :, ::-1])) is None  # a mirrored shot
    assert colour_switch(a[0], a[0][:90]) is None  # pictures of different sizes


def window(end: float, switches: list) -> WindowResult:
    details = {"colour_switches": switches} if switches else {}
    return WindowResult(stream="s", start=end - 4, end=end, dimensions={"frame": {"color": 90.0}}, face_presence=0.0,
                        face_size=0.0, identity_stability=None, details=details)


def test_the_baseline_holds_a_switch_until_it_switches_back():
    cfg = AlertConfig()
    base = StreamBaseline()
    assert COLOUR_SWITCH not in base.observe(window(4, []), cfg, now=4.0)
    assert COLOUR_SWITCH in base.observe(window(5, [[4.5, SWAP]]), cfg, now=5.0)
    # overlapping windows report the same switch again: still one switch, held
    for t in range(6, 9):
        assert COLOUR_SWITCH in base.observe(window(t, [[4.5, SWAP]] if t < 8 else []), cfg, now=float(t))
    assert base.switched == {SWAP: 5.0}
    assert COLOUR_SWITCH not in base.observe(window(10, [[9.5, SWAP]]), cfg, now=10.0)  # swapped back
    # a range conversion washed out, then crushed back
    assert COLOUR_SWITCH in base.observe(window(12, [[11.5, RANGE_WASHED]]), cfg, now=12.0)
    assert COLOUR_SWITCH not in base.observe(window(14, [[13.5, RANGE_CRUSHED]]), cfg, now=14.0)
    # one never switched back is the stream's own picture after the baseline's window
    assert COLOUR_SWITCH in base.observe(window(20, [[19.5, SWAP]]), cfg, now=20.0)
    later = 20.0 + cfg.baseline_window_s + 1
    assert COLOUR_SWITCH not in base.observe(window(later, []), cfg, now=later)
