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


def luma_thumb(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (64, 36), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(("source", "shift"), [("carphone-s0", 4), ("astronaut-c0", 8)])
def test_a_range_conversion_the_pictures_fit_less_well_is_named_when_a_frame_step_shows_it(source, shift):
    frames, _ = clip(source)
    moved = np.ascontiguousarray(np.roll(frames[2], shift, axis=1))  # the scene moved a lot between the pictures
    crushed = looks.apply_fault(moved[None], "range-crushed", 4)[0]
    assert colour_switch(frames[0], crushed) is None  # the pictures alone: too much else changed
    # the frames between them: the conversion shows at one step (33-40 ms apart), on the luma thumbnails
    steps = [luma_thumb(frames[0]), luma_thumb(moved), luma_thumb(crushed)]
    assert colour_switch(frames[0], crushed, steps) == RANGE_CRUSHED
    # without such a step (the scene only moved), nothing is named
    assert colour_switch(frames[0], crushed, [luma_thumb(frames[0]), luma_thumb(frames[1]), luma_thumb(moved)]) is None


@pytest.mark.parametrize("fault", ["range-washed", "range-crushed"])
def test_a_range_conversion_of_a_grey_picture_is_named_and_a_swap_of_it_is_nothing(fault):
    import cv2

    frames, _ = clip("carphone-s0")
    grey = np.stack([cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for f in frames])
    assert colour_switch(grey[0], looks.apply_fault(grey[1:2], fault, 4)[0]) == SWITCHES[fault]
    assert colour_switch(grey[0], looks.apply_fault(grey[1:2], "swap-uv", 4)[0]) is None  # nothing changed to see


def test_a_tint_on_a_grey_picture_is_no_swap():
    import cv2

    frames, _ = clip("carphone-s0")
    grey = np.stack([cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for f in frames])
    for fault in ("chroma-offset", "tint-green", "tint-magenta"):
        assert colour_switch(grey[0], looks.apply_fault(grey[1:2], fault, 4)[0]) is None, fault


def test_a_stream_that_starts_over_drops_the_switch_it_held_and_reads_new_ones():
    cfg = AlertConfig()
    base = StreamBaseline()
    base.observe(window(30, []), cfg, now=30.0)
    assert COLOUR_SWITCH in base.observe(window(31, [[30.5, SWAP]]), cfg, now=31.0)
    # the publisher reconnected: its timestamps start again from 0
    assert COLOUR_SWITCH not in base.observe(window(4, []), cfg, now=40.0)
    assert COLOUR_SWITCH in base.observe(window(5, [[4.5, RANGE_WASHED]]), cfg, now=41.0)
