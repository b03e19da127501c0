"""Cause selection weighs which dimension moved against how each fault moves the others (stream/ops/cause_model)."""

from __future__ import annotations

from engines.features import WindowResult
from stream.config import AlertConfig
from stream.ops.cause_model import side_effects
from stream.ops.recommend import window_causes

CLEAN = {"blur": 95, "noise": 99, "color": 85, "artifact": 99, "luminance": 80, "temporal": 92}
CFG = AlertConfig()  # threshold 45


def causes(low_bitrate: bool = False, **face: float) -> set[str]:
    dims = {**CLEAN, **face}
    return window_causes(WindowResult("cam", 0, 4, {"frame": dims, "face": dims}, 1.0, 0.1, 0.9), low_bitrate, CFG)


def test_a_dark_picture_is_named_camera_although_its_colour_and_artifact_fell_too():
    # the low-light run: luminance ~5, colour 0, artifact ~42: "source" used to win by priority
    assert causes(luminance=5, color=0, artifact=42) == {"camera"}
    assert side_effects({**CLEAN, "luminance": 5, "color": 0, "artifact": 42}, 45) == {"color", "artifact"}


def test_grain_that_cost_the_encoder_its_bits_is_noise_not_compression():
    assert causes(noise=38, artifact=40) == {"camera"}
    assert causes(low_bitrate=True, noise=38, artifact=40) == {"camera"}


def test_a_fault_the_table_does_not_explain_still_raises_its_own_cause():
    assert causes(low_bitrate=True, artifact=20) == {"compression"}  # a starved encoder: nothing else moved
    # the artifact fell further than grain of that strength pulls it: a starved encoder on a grainy camera
    assert causes(low_bitrate=True, noise=40, artifact=15) == {"camera", "compression"}
    # blur is not what a dark picture does to sharpness: both faults are named
    assert causes(luminance=10, blur=20) == {"camera", "source"}
    # the pull is one way: a starved encoder does not explain a low noise score
    assert "noise" not in side_effects({**CLEAN, "artifact": 5, "noise": 40}, 45)


def test_a_sudden_fall_of_sharpness_against_the_streams_own_past_is_a_down_switch():
    from stream.ops.cause_model import SharpnessBaseline

    switched = SharpnessBaseline()
    assert not any(switched.fell(t, 94.0) for t in range(1, 31))
    assert not switched.fell(31, 83.0)  # 11 points softer: within a clean stream's swings
    assert switched.fell(32, 70.0)  # 192x108 upscaled: 24 points below the stream's norm
    soft_all_along = SharpnessBaseline()  # an upscaled QCIF camera: its look, not a fault
    assert not any(soft_all_along.fell(t, 70.0) for t in range(1, 61))
    young = SharpnessBaseline()  # no baseline yet: nothing to fall from
    assert not young.fell(1, 94.0) and not young.fell(5, 60.0)
    restarted = SharpnessBaseline()  # a stream that starts over forgets its past
    assert not any(restarted.fell(t, 94.0) for t in range(1, 31))
    assert not restarted.fell(2, 70.0)


def test_the_sharpness_norm_keeps_each_region_and_skips_what_a_decoder_fault_damaged():
    """carphone through the live-fault benchmark: damaged packets lost the face and blocked the picture, so the
    published blur read 91-95 for 20 s where the clean face reads 80-86; learnt, that was a 'fall' once the clean
    picture came back (rendition_down for 13 s after the damage ended)."""
    from stream.ops.cause_model import SharpnessBaseline

    regions = SharpnessBaseline()
    assert not any(regions.fell(t, 82.0, "face") for t in range(1, 31))
    assert not any(regions.fell(t, 95.0, "frame") for t in range(31, 41))  # the face lost: the frame's scale
    assert not regions.fell(41, 81.0, "face")  # against the face's own past, not the frame's
    damaged = SharpnessBaseline()
    assert not any(damaged.fell(t, 82.0, "face") for t in range(1, 31))
    assert not any(damaged.fell(t, 94.0, "face", learn=False) for t in range(31, 51))
    assert not damaged.fell(51, 81.0, "face")
    learnt = SharpnessBaseline()  # what the old rule did with the same windows
    assert not any(learnt.fell(t, 82.0, "face") for t in range(1, 31))
    assert not any(learnt.fell(t, 94.0, "face") for t in range(31, 51))
    assert learnt.fell(51, 81.0, "face")


def test_the_recommender_raises_blur_cause_on_a_down_switch_above_the_threshold():
    from prometheus_client import CollectorRegistry

    from stream.live.monitor import StreamState
    from stream.ops.metrics import build_metrics
    from stream.ops.recommend import Recommender

    metrics = build_metrics(CollectorRegistry())
    state = StreamState("cam", "rtmp_listen", "rtmp://x", metrics)
    state.width, state.height, state.fps, state.bitrate_bps = 640, 360, 25.0, 2_000_000
    now = [1000.0]
    rec = Recommender(AlertConfig(raise_after_s=10, clear_after_s=20), metrics, lambda: now[0])

    def window(t: float, blur: float) -> WindowResult:
        dims = {**CLEAN, "blur": blur}
        return WindowResult("cam", t - 4, t, {"frame": dims, "face": dims}, 1.0, 0.1, 0.9)

    for t in range(4, 40):
        now[0] = 1000.0 + t
        rec.observe(state, window(t, 94.0))
    assert state.recommendation is None
    for t in range(40, 52):
        now[0] = 1000.0 + t
        rec.observe(state, window(t, 70.0))  # above the threshold (45): only the stream's own past says it fell
    # the catalogue has the rendition down-switch cause (engines/families.FAULT_CAUSES): a fall of sharpness against
    # the stream's own past is named as that
    assert state.recommendation is not None and state.recommendation["cause"] == "rendition_down"


def test_no_face_in_a_dark_picture_is_darkness_not_framing():
    dark = {**CLEAN, "luminance": 3, "color": 1}
    r = WindowResult("cam", 0, 4, {"frame": dark}, 0.0, 0.0, None)
    assert window_causes(r, False, CFG) == {"camera"}
    lit = WindowResult("cam", 0, 4, {"frame": CLEAN}, 0.0, 0.0, None)
    assert window_causes(lit, False, CFG) == {"framing"}  # a lit picture without a face is a framing problem


def test_noise_is_judged_on_the_whole_picture_too():
    # grain between pictures is measured on the frame only: the face's own noise score does not see it
    r = WindowResult("cam", 0, 4, {"frame": {**CLEAN, "noise": 25}, "face": {**CLEAN, "noise": 97}}, 1.0, 0.1, 0.9)
    assert window_causes(r, False, CFG) == {"camera"}
    r = WindowResult("cam", 0, 4, {"frame": {**CLEAN, "blur": 25}, "face": CLEAN}, 1.0, 0.1, 0.9)
    assert window_causes(r, False, CFG) == set()  # other families: the face's score decides
