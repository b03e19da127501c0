"""The monitor's own recommendations: causes from dimension scores and bitrate, hysteresis on a fake clock."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from engines.features import WindowResult
from stream.config import AlertConfig
from stream.live.monitor import StreamState
from stream.ops.metrics import build_metrics
from stream.ops.recommend import CAUSES, Recommender, is_low_bitrate, window_causes

CLEAN = {"blur": 95, "noise": 99, "color": 85, "artifact": 99, "luminance": 80, "temporal": 92}


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def result(face: dict | None = None, frame: dict | None = None, presence: float = 1.0, score=None) -> WindowResult:
    dims = {"frame": {**CLEAN, **(frame or {})}}
    if face is not None:
        dims["face"] = {**CLEAN, **face}
    return WindowResult("cam", 0, 4, dims, presence, 0.1, 0.9, score=score)


@pytest.fixture
def setup():
    metrics = build_metrics(CollectorRegistry())
    state = StreamState("cam", "rtmp_listen", "rtmp://x", metrics)
    state.width, state.height, state.fps, state.bitrate_bps = 640, 360, 25.0, 80_000
    clock = Clock()
    rec = Recommender(AlertConfig(raise_after_s=10, clear_after_s=20), metrics, clock)
    notices = []
    rec.notify.append(lambda status, stream, cause, start, end: notices.append((status, stream, cause.name)))
    return metrics, state, clock, rec, notices


def sample(metrics, cause: str) -> float | None:
    return metrics.registry.get_sample_value(
        "fvq_stream_recommendation", {"stream": "cam", "cause": cause, "action": CAUSES[cause].action}
    )


def run(rec, state, clock, r: WindowResult, seconds: int) -> None:
    for _ in range(seconds):
        rec.observe(state, r)
        clock.t += 1


def test_causes_from_dimensions_face_region_first():
    cfg = AlertConfig()
    assert window_causes(result(face={}), True, cfg) == set()
    # the face region decides when there is one; the frame's low artifact score is not the face's
    assert window_causes(result(face={}, frame={"artifact": 10}), True, cfg) == set()
    assert window_causes(result(face={"artifact": 10}), True, cfg) == {"compression"}
    assert window_causes(result(face={"blur": 30}), False, cfg) == {"source"}
    # no face: the frame; a low bitrate that shows in the picture (the quantiser) blames compression
    assert window_causes(result(frame={"blur": 30, "artifact": 60}), True, cfg) == {"compression"}
    # ...a picture coded at a low quantiser was soft before the encoder, whatever the bitrate
    assert window_causes(result(frame={"blur": 30}), True, cfg) == {"source"}
    assert window_causes(result(face={"temporal": 20}), True, cfg) == {"stalls"}
    assert window_causes(result(face={"luminance": 20}), True, cfg) == {"camera"}
    assert window_causes(result(face={"noise": 20}), True, cfg) == {"camera"}
    assert window_causes(result(presence=0.0), True, cfg) == {"framing"}
    assert window_causes(result(face={}, score=20), True, cfg) == {"low_quality"}
    assert window_causes(result(face={"noise": 20}, score=20), True, cfg) == {"camera"}


def test_low_bitrate_absolute_and_per_pixel():
    cfg = AlertConfig(low_bitrate_bps=1_500_000, low_bits_per_pixel=0.05)
    assert is_low_bitrate(60_000, 640, 360, 25, cfg)
    assert not is_low_bitrate(2_000_000, 640, 360, 25, cfg)
    assert is_low_bitrate(2_000_000, 1920, 1080, 30, cfg)  # 0.032 bits per pixel
    assert not is_low_bitrate(6_000_000, 1920, 1080, 30, cfg)
    assert is_low_bitrate(0, 640, 360, 25, cfg)  # unknown


def test_raised_after_it_holds_and_cleared_after_it_is_gone(setup):
    metrics, state, clock, rec, notices = setup
    bad, good = result(face={"artifact": 12}), result(face={})
    run(rec, state, clock, bad, 10)
    assert state.recommendation is None and sample(metrics, "compression") is None
    run(rec, state, clock, bad, 1)  # 10 s held
    assert state.recommendation["cause"] == "compression"
    assert state.recommendation["action"] == "raise the bitrate (or use a slower encoder preset)"
    assert sample(metrics, "compression") == 1
    assert notices == [("firing", "cam", "compression")]
    run(rec, state, clock, good, 20)  # gone 19 s: still raised
    assert state.recommendation["cause"] == "compression"
    run(rec, state, clock, good, 1)
    assert state.recommendation is None
    assert sample(metrics, "compression") is None  # the series is removed, not set to 0
    assert notices[-1] == ("resolved", "cam", "compression")


def test_does_not_flap_on_alternating_windows(setup):
    metrics, state, clock, rec, notices = setup
    bad, good = result(face={"temporal": 10}), result(face={})
    for _ in range(30):  # never holds 10 s in a row: never raised
        run(rec, state, clock, bad, 5)
        run(rec, state, clock, good, 1)
    assert state.recommendation is None and notices == []
    run(rec, state, clock, bad, 11)
    assert state.recommendation["cause"] == "stalls"
    for _ in range(30):  # a raised cause that comes back within 20 s does not clear
        run(rec, state, clock, good, 15)
        run(rec, state, clock, bad, 1)
    assert state.recommendation["cause"] == "stalls"
    assert notices == [("firing", "cam", "stalls")]


def test_current_cause_changes_and_old_series_is_removed(setup):
    metrics, state, clock, rec, notices = setup
    run(rec, state, clock, result(face={"luminance": 10}), 11)
    assert state.recommendation["cause"] == "camera" and sample(metrics, "camera") == 1
    both = result(face={"luminance": 10, "artifact": 10})
    run(rec, state, clock, both, 11)  # compression ranks first
    rec_json = state.recommendation
    assert rec_json["cause"] == "compression"
    assert [c["cause"] for c in rec_json["causes"]] == ["compression", "camera"]
    assert sample(metrics, "compression") == 1 and sample(metrics, "camera") is None
    series = [s for s in metrics.registry.collect() if s.name == "fvq_stream_recommendation"][0].samples
    assert len(series) == 1
    metrics.forget_stream("cam")  # the stream was replaced under the same name: its series come back
    run(rec, state, clock, both, 1)
    assert sample(metrics, "compression") == 1


def test_higher_bitrate_turns_compression_into_source(setup):
    metrics, state, clock, rec, notices = setup
    state.bitrate_bps = 4_000_000
    run(rec, state, clock, result(face={"blur": 20}), 11)
    assert state.recommendation["cause"] == "source"


def test_down_stream_raises_down_and_drops_picture_causes(setup):
    metrics, state, clock, rec, notices = setup
    run(rec, state, clock, result(face={"artifact": 10}), 11)
    state.state = "down"
    for _ in range(11):
        rec.tick([state])
        clock.t += 1
    assert state.recommendation["cause"] == "down"
    assert state.recommendation["severity"] == "critical"
    for _ in range(10):
        rec.tick([state])
        clock.t += 1
    assert [c["cause"] for c in state.recommendation["causes"]] == ["down"]  # compression cleared after 20 s
    assert ("resolved", "cam", "compression") in notices
    rec.tick([])  # the stream was removed: its series and its open alerts go
    assert sample(metrics, "down") is None
    assert notices[-1] == ("resolved", "cam", "down")


def test_down_is_raised_after_the_fault_hold_not_the_picture_hold(setup):
    """No frames is read from the transport, not from windows: `down` takes alerts.fault_raise_after_s (3 s)."""
    metrics, state, clock, rec, notices = setup
    state.state = "down"
    for _ in range(3):
        rec.tick([state])
        clock.t += 1
    assert state.recommendation is None or state.recommendation.get("cause") != "down"
    rec.tick([state])
    assert state.recommendation["cause"] == "down" and ("firing", "cam", "down") in notices


def test_a_stalled_stream_whose_publisher_then_leaves_stays_down(setup):
    """A publisher that went silent and was then dropped (the media server's idle timeout) said no goodbye."""
    metrics, state, clock, rec, notices = setup
    state.mark_down("down")
    state.ended("publisher_left")
    assert state.state == "down" and state.end_reason == "stalled"
    fresh = StreamState("cam2", "rtmp_listen", "rtmp://y", metrics)
    fresh.state = "up"
    fresh.ended("publisher_left")  # a goodbye while frames still came: the show ended
    assert fresh.state == "ended"


# the stream's own past -----------------------------------------------------------------------------------------


def lit(colour: float, light: tuple[float, float] = (0.0, 0.0)) -> WindowResult:
    r = result(face={"color": colour})
    r.details.update({"light_log_rg": light[0], "light_log_bg": light[1]})
    return r


def test_a_fall_below_the_streams_own_baseline_is_a_cause_above_the_floor(setup):
    metrics, state, clock, rec, notices = setup
    run(rec, state, clock, lit(92), 400)  # more than baseline_min_history_s (300 s) of a clean stream
    run(rec, state, clock, lit(55), 15)  # 37 points below its median, still above the floor of 45
    assert ("firing", "cam", "below_baseline") in notices
    assert sample(metrics, "below_baseline") == 1.0
    assert state.recommendation["cause"] == "below_baseline"


def test_a_steady_unusual_look_is_judged_against_itself(setup):
    metrics, state, clock, rec, notices = setup
    run(rec, state, clock, lit(55, (0.5, -0.8)), 400)  # a warm candle-lit look from the start: never a cause
    run(rec, state, clock, lit(50, (0.52, -0.79)), 60)
    assert notices == [] and state.recommendation is None


def test_a_young_stream_has_no_baseline_yet(setup):
    metrics, state, clock, rec, notices = setup
    run(rec, state, clock, lit(92), 100)  # under baseline_min_history_s
    run(rec, state, clock, lit(55), 30)
    assert notices == []


def test_a_white_balance_jump_is_a_colour_shift_though_colour_stays_high(setup):
    metrics, state, clock, rec, notices = setup
    run(rec, state, clock, lit(95, (0.0, 0.0)), 400)
    run(rec, state, clock, lit(95, (0.2, -0.25)), 15)  # daylight to tungsten: a look, colour reads clean
    assert notices == [("firing", "cam", "colour_shift")]
    # once the new light has been the stream's for most of the baseline window it is its baseline: resolved
    run(rec, state, clock, lit(95, (0.2, -0.25)), 1800)
    assert notices[-1] == ("resolved", "cam", "colour_shift")


def test_a_colour_switch_is_named_alone_and_nothing_of_it_lingers_after_the_switch_back(setup):
    metrics, state, clock, rec, notices = setup
    state.bitrate_bps = 4_000_000
    run(rec, state, clock, result(face={}), 5)
    swapped = result(face={"color": 5})  # what the swap leaves on a photographed face: colour far below the floor
    swapped.details["colour_switches"] = [[5.5, "swap"]]
    run(rec, state, clock, swapped, 30)
    assert state.recommendation["cause"] == "colour_switch"
    assert sample(metrics, "colour_switch") == 1
    assert metrics.registry.get_sample_value("fvq_picture_colour_switched", {"stream": "cam", "switch": "swap"}) == 1
    back = result(face={"color": 5})  # the switch back, while the published (smoothed) colour still lags
    back.details["colour_switches"] = [[5.5, "swap"], [35.5, "swap"]]
    run(rec, state, clock, back, 5)
    run(rec, state, clock, result(face={}), 40)
    assert state.recommendation is None
    raised = [cause for status, _, cause in notices if status == "firing"]
    assert raised == ["colour_switch"], notices  # camera was never raised for it, before or after
    assert metrics.registry.get_sample_value("fvq_picture_colour_switched", {"stream": "cam", "switch": "swap"}) is None
