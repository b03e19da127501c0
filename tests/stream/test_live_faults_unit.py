"""The decoder's facts and what they mean, without a network: blank pictures, held pictures, decoder error lines
captured per thread, format changes against the recent past and against the source's `expect`."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from engines.signals import HELD_MIN_S, dimension_score, thumb_signals
from stream.config import ExpectedFormat, MonitorConfig
from stream.ingest.damage import DecoderErrors
from stream.ingest.video_facts import VideoFormat, blank_level
from stream.live.faults import CHANGE_HOLD_S, DAMAGE_SPAN_S, RECENT_PAST_S, LiveFaults

FPS = 25.0


def test_blank_pictures_and_a_dark_scene():
    rng = np.random.default_rng(1)
    black = np.full((36, 64), 16, np.uint8)
    assert blank_level(black) == 16
    logo = black.copy()
    logo[2:5, 2:10] = 235  # a channel logo on the black picture: 1% of the thumbnail
    assert blank_level(logo) == 16
    blue_card = np.full((36, 64), 41, np.uint8)
    assert blank_level(blue_card) == 41  # a "no signal" card is blank too (not black)
    # a dark scene: a face-sized bright patch and a gradient, a few levels each, still a picture
    dark = (np.linspace(10, 24, 64)[None, :].repeat(36, 0)).astype(np.uint8)
    assert blank_level(dark) is None
    noisy_black = np.clip(16 + rng.normal(0, 1.0, (36, 64)), 0, 255).astype(np.uint8)
    assert blank_level(noisy_black) is not None


def _thumbs(changes: list[float], base: np.ndarray) -> list[np.ndarray]:
    """Thumbnails whose consecutive mean |difference| is each of `changes` (a uniform step over the picture)."""
    out = [base.astype(np.float64)]
    for i, c in enumerate(changes):
        step = np.zeros_like(base, dtype=np.float64)
        k = int(round(c * step.size))  # c levels on average: k pixels changed by one level
        step.flat[:k] = 1.0 if i % 2 == 0 else -1.0
        out.append(out[-1] + step)
    return [np.clip(t, 0, 255).astype(np.uint8) for t in out]


def test_a_held_picture_is_a_freeze_in_a_still_window_and_a_still_presenter_is_not():
    base = np.full((36, 64), 100, np.uint8)
    pts = np.arange(100) / FPS
    # fully frozen 4 s window: exact repeats with an encoder's keyframe refresh (0.2 levels) every 2 s
    frozen = [0.002] * 99
    frozen[49] = 0.2
    held = thumb_signals(_thumbs(frozen, base), pts, FPS, held_mad=0.5)
    assert held["frozen_share"] > 0.9 and dimension_score("temporal", held) < 5
    v2 = thumb_signals(_thumbs(frozen, base), pts, FPS)  # version 2: a still scene, never judged
    assert v2["frozen_share"] == 0.0
    # a still presenter who breathes: a few tenths between pictures, never held
    breathing = thumb_signals(_thumbs([0.3] * 99, base), pts, FPS, held_mad=0.5)
    assert breathing["frozen_share"] == 0.0 and dimension_score("temporal", breathing) > 90
    # a held run just shorter than HELD_MIN_S in a still window is no freeze; one frame interval more is
    short = int(HELD_MIN_S * FPS) - 1
    still = [0.3] * 99
    still[30:30 + short] = [0.0] * short
    assert thumb_signals(_thumbs(still, base), pts, FPS, held_mad=0.5)["frozen_share"] == 0.0
    still[30 + short] = 0.0
    assert thumb_signals(_thumbs(still, base), pts, FPS, held_mad=0.5)["frozen_share"] > 0.2


def test_decoder_error_lines_are_counted_on_their_own_thread_only():
    counts = {}

    def decode_thread(name: str, lines: int) -> None:
        with DecoderErrors() as errors:
            for i in range(lines):
                av.logging.log(av.logging.ERROR, "h264", f"error while decoding MB {i} 0\n")
            av.logging.log(av.logging.ERROR, "h264", "error while decoding MB 0 0\n")  # a repeat counts too
            av.logging.log(av.logging.ERROR, "tcp", "Connection reset\n")  # not the decoder's
            av.logging.log(av.logging.WARNING, "h264", "a warning\n")
            counts[name] = errors.take(frozenset({"h264", "flv"}))

    threads = [threading.Thread(target=decode_thread, args=(f"s{i}", n)) for i, n in enumerate((3, 7))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts["s0"] == (4, "h264: error while decoding MB 0 0")
    assert counts["s1"][0] == 8


def _fmt(w: int, h: int, pix: str = "yuv420p", space: str = "bt709") -> VideoFormat:
    return VideoFormat(w, h, pix, space, "tv")


def test_format_changes_against_the_recent_past():
    f = LiveFaults()
    assert f.video_format(_fmt(640, 360), 0.0) == []
    assert f.active(1.0) == set()
    assert f.video_format(_fmt(192, 108), 10.0) == ["size"]
    assert f.active(11.0) == {"rendition_down"}
    # held long enough, the smaller size is the stream's normal
    assert f.active(10.0 + RECENT_PAST_S + 1) == set()
    assert f.video_format(_fmt(640, 360), 400.0) == ["size"]
    assert f.active(401.0) == set()  # an up-switch is counted, not a fault
    assert f.video_format(_fmt(640, 360, "yuvj420p", "bt470bg"), 500.0) == ["pixel_format", "colour_space"]
    assert f.active(501.0) == {"format_change"}
    assert f.active(500.0 + CHANGE_HOLD_S + 1) == set()
    assert f.nominal_rate(25.0, 600.0) is False  # the first declared rate
    assert f.nominal_rate(30.0, 700.0) is True and f.active(701.0) == {"format_change"}


def test_format_against_what_the_source_expects():
    cfg = MonitorConfig.model_validate({"sources": [
        {"name": "cam", "url": "rtmp://0.0.0.0:1935/live/cam", "listen": True,
         "expect": {"width": 1280, "height": 720, "fps": 25}}]})
    expect = cfg.sources[0].expect
    assert expect == ExpectedFormat(width=1280, height=720, fps=25)
    with pytest.raises(ValueError, match="expect.fpz"):
        MonitorConfig.model_validate({"sources": [{"name": "c", "url": "x.mp4", "expect": {"fpz": 25}}]})
    f = LiveFaults(expect)
    f.video_format(_fmt(640, 360), 0.0)  # smaller than expected from the start: no recent past needed
    assert f.active(1.0, fps=25.0, running_s=1.0) == {"rendition_down"}
    f.video_format(_fmt(1920, 1080), 2.0)
    assert f.active(3.0, fps=25.0, running_s=3.0) == {"format_change"}  # larger than expected: another format
    f.video_format(_fmt(1280, 720), 4.0)
    assert f.active(5.0, fps=25.0, running_s=5.0) == set()
    assert f.active(6.0, fps=12.0, running_s=2.0) == set()  # the rate settles first
    assert f.active(6.0, fps=12.0, running_s=6.0) == {"format_change"}
    assert f.active(6.0, fps=24.0, running_s=6.0) == set()  # within 15%


def test_transport_damage_needs_errors_within_the_span():
    f = LiveFaults()
    f.damage(1, 0, 0.0)
    assert f.active(0.5) == set()  # one isolated error line
    f.damage(3, 2, 1.0)
    assert f.active(1.5) == {"transport_damage"}
    assert f.active(1.0 + DAMAGE_SPAN_S + 0.1) == set()
    assert (f.decode_errors, f.corrupt_frames) == (4, 2)
    f.picture(16, 10.0)
    assert f.active(10.2) == set() and f.active(10.6) == {"black_picture"}
    f.picture(None, 11.0)
    assert f.active(11.1) == set()


def test_a_fault_is_raised_sooner_and_explains_the_picture_causes_it_brings():
    import time

    from prometheus_client import CollectorRegistry

    from engines.features import WindowResult
    from stream.config import AlertConfig
    from stream.live.stream_state import StreamState
    from stream.ops.metrics import build_metrics
    from stream.ops.recommend import Recommender

    metrics = build_metrics(CollectorRegistry())
    state = StreamState("cam", "rtmp_listen", "rtmp://x", metrics)
    state.state, state.bitrate_bps, state.fps, state.width, state.height = "up", 2e6, 25.0, 640, 360
    clock = [1_700_000_000.0]
    rec = Recommender(AlertConfig(raise_after_s=10, clear_after_s=20, fault_raise_after_s=3), metrics, lambda: clock[0])
    # a black picture: dark, colourless and faceless windows
    dark = WindowResult("cam", 0, 4, {"frame": {"luminance": 5.0, "color": 3.0, "temporal": 1.0}}, 0.0, 0.0, None)
    state.faults.picture(16, time.monotonic() - 1.0)

    def causes() -> list[str]:
        return [c["cause"] for c in (state.recommendation or {}).get("causes", [])]

    for second in range(15):
        rec.observe(state, dark)
        if second == 2:
            assert causes() == []  # not held long enough yet
        clock[0] += 1
    assert causes() == ["black_picture"]  # raised after 3 s; camera, stalls and framing explained by it
    assert metrics.registry.get_sample_value("fvq_stream_fault", {"stream": "cam", "fault": "black_picture"}) == 1
    # the picture comes back but the windows still lag dark: the raised fault still explains them
    state.faults.picture(None, time.monotonic())
    for _ in range(15):
        rec.observe(state, dark)
        clock[0] += 1
    assert causes() == ["black_picture"]
    # once the fault has cleared, a picture that stays dark is the camera's (and its other causes)
    for _ in range(20):
        rec.observe(state, dark)
        clock[0] += 1
    assert "black_picture" not in causes() and "camera" in causes()


def test_repeated_presentation_times_hold_the_picture_and_the_timeline_goes_on():
    from fractions import Fraction

    from engines.signals import HELD_MAD
    from stream.config import AnalysisConfig
    from stream.ingest.decode import FrameConverter

    conv = FrameConverter(AnalysisConfig(sample_fps=1.0))
    rng = np.random.default_rng(3)
    records = []
    for i in range(100):
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (72, 128, 3), dtype=np.uint8), format="rgb24")
        frame.time_base = Fraction(1, 1000)
        frame.pts = 40 * (i if not 30 <= i < 70 else 30)  # a stuck encoder clock for 40 frames: new pictures
        records.append(conv.convert(frame))
    pts = np.array([r.pts for r in records])
    assert np.allclose(np.diff(pts[25:75]), 0.04, atol=0.005)  # the timeline goes on at the frame interval
    assert conv.repeated_pts == 39
    assert all(records[i].thumb is records[30].thumb for i in range(31, 70))  # a player shows frame 30 held
    r = thumb_signals([x.thumb for x in records], pts, FPS, held_mad=HELD_MAD)
    assert r["frozen_share"] > 0.35 and dimension_score("temporal", r) < 10


def test_a_stream_without_a_declared_rate_is_judged_against_the_rate_it_kept():
    """WHIP declares no frame rate: a collapse from 25 to 4 frames a second read as a steady 4 fps stream (temporal
    86-90 in the live-fault benchmark). The median of its last minute stands for the declared rate while the
    received rate is under 0.6 of it; a steady stream, or one that only wavers, is judged on its own windows."""
    from prometheus_client import CollectorRegistry

    from stream.live.stream_state import StreamState
    from stream.ops.metrics import build_metrics

    state = StreamState("peer", "whip", "whip:peer", build_metrics(CollectorRegistry()))
    t0 = 1000.0
    state._first_frame_at = t0

    def run(seconds: float, fps: float, start: float) -> float:
        t = start
        while t < start + seconds:
            state._frames.append(t)
            t += 1.0 / fps
            if int(t) != int(t - 1.0 / fps):  # about once a second, as the analysis loop does more often
                state.refresh_rates(t)
        return start + seconds

    t = run(10.0, 25.0, t0)
    assert state.expected_fps() is None  # too young to have a custom
    t = run(30.0, 25.0, t)
    assert state.expected_fps() is None  # steady: its own windows judge it
    t = run(5.0, 21.0, t)
    assert state.expected_fps() is None  # a browser wavering to 21 fps is not a collapse
    t = run(5.0, 4.0, t)
    assert state.expected_fps() == pytest.approx(25.0, abs=1.0)
    state.nominal_fps = 30.0  # a declared rate always wins
    assert state.expected_fps() == 30.0
