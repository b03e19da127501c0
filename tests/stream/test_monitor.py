"""The monitor's own bookkeeping: late windows skipped and counted, the stream cap, series of a removed stream."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engines.features import FrameRecord
from stream.config import MonitorConfig, SourceConfig
from stream.live.analysis import Analyzer
from stream.live.monitor import Monitor, StreamExistsError, StreamLimitError
from stream.ops.metrics import build_metrics
from tests.conftest import free_port


def monitor(max_streams: int = 4) -> Monitor:
    cfg = MonitorConfig.model_validate({"limits": {"max_streams": max_streams}, "no_model": True,
                                        "window": {"length_s": 1, "hop_s": 1}, "analysis": {"max_lag_s": 2}})
    return Monitor(cfg, Analyzer(face=None), build_metrics())


def dead_source(name: str) -> SourceConfig:
    return SourceConfig(name=name, url=f"rtmp://127.0.0.1:{free_port()}/live/{name}")


def frames(start: float, n: int, arrived: float) -> list[FrameRecord]:
    rng = np.random.default_rng(0)
    return [
        FrameRecord(pts=start + i / 10, thumb=rng.integers(0, 255, (36, 64), dtype=np.uint8),
                    source_size=(64, 36), arrived=arrived)
        for i in range(n)
    ]


def test_windows_reached_too_late_are_skipped_and_counted():
    m = monitor()
    stream = m.add_stream(dead_source("cam"))
    stream.reader.stop()
    now = time.monotonic()
    for rec in frames(0.0, 25, arrived=now - 10):  # the analysis is 10 s behind this live stream
        stream.queue.put(rec)
    assert m.step() == []
    reg = m.metrics.registry
    assert reg.get_sample_value("fvq_windows_dropped_total", {"stream": "cam", "reason": "late"}) == 2
    for rec in frames(2.5, 15, arrived=time.monotonic()):  # caught up: windows are analysed again
        stream.queue.put(rec)
    published = m.step()
    assert [(r.start, r.end) for r in published] == [(2.0, 3.0)]
    assert reg.get_sample_value("fvq_windows_analysed_total", {"stream": "cam"}) == 1
    m.stop()


def test_the_streams_rated_longest_ago_go_first():
    """Under overload a pass rates its first batch and skips the later ones as late; the windows of the streams
    rated longest ago go first, so the skipping falls on each stream in turn instead of on the last streams in the
    monitor's own order every pass (one RTMP key of twenty read 30 s stale that way while the others scored)."""
    m = monitor(max_streams=12)
    names = [f"k{i:02d}" for i in range(10)]
    # pushed (WHIP) streams: no reader pulls, so none can fail to connect and close its open window during a pass
    # (a dead RTMP pull source raced its reader's stop() and flushed a second window on a loaded host)
    streams = [m.add_stream(SourceConfig(name=n, url=f"whip:{n}", kind="whip")) for n in names]

    def feed(start: float) -> None:
        now = time.monotonic()
        for s in streams:
            for rec in frames(start, 10, arrived=now):
                s.queue.put(rec)

    feed(0.0)
    feed(1.0)  # the frame at 1.0 closes each stream's first window
    first = m.step()
    assert sorted(r.stream for r in first) == names and all(s.rated_at > 0 for s in streams)
    # two streams whose windows were skipped last time (never rated since): theirs are rated first now
    streams[8].rated_at = streams[9].rated_at = 0.0
    before = {s.name: s.rated_at for s in streams}
    feed(2.0)
    second = m.step()
    assert [r.stream for r in second][:2] == ["k08", "k09"] and len(second) == 10
    assert all(s.rated_at > before[s.name] for s in streams)
    m.stop()


def test_stream_cap_refuses_and_counts_and_names_are_unique():
    m = monitor(max_streams=2)
    a = m.add_stream(dead_source("a"))
    m.add_stream(dead_source("b"))
    with pytest.raises(StreamLimitError, match="max_streams=2"):
        m.add_stream(dead_source("c"))
    assert m.metrics.registry.get_sample_value("fvq_streams_refused_total", {"reason": "limit"}) == 1
    m.remove_stream("b")
    with pytest.raises(StreamExistsError):
        m.add_stream(dead_source("a"))
    m.add_stream(dead_source("c"))  # b's slot is free again
    # a removed stream leaves no series behind: label values stay bounded
    names = {s.labels.get("stream") for fam in m.metrics.registry.collect() for s in fam.samples}
    assert "b" not in names and {"a", "c"} <= names
    a.reader.stop()
    m.stop()


def test_load_shedder_goes_up_while_the_backlog_grows_and_down_after_calm():
    from stream.live.load_shedding import LoadShedder

    s = LoadShedder(backlog_s=1.0, recover_s=10.0)
    assert s.update(0.5, now=0.0) == 0  # behind, but under the threshold
    assert s.update(1.5, now=1.0) == 1
    assert s.update(2.0, now=1.5) == 1  # the last step gets backlog_s to act
    assert s.update(2.0, now=2.1) == 2  # still growing: one more
    assert s.update(1.8, now=3.5) == 2  # falling: the level holds
    assert s.update(0.6, now=5.0) == 2  # neither high nor calm
    assert s.update(0.1, now=6.0) == 2  # calm from here
    assert s.update(0.1, now=15.9) == 2
    assert s.update(0.1, now=16.0) == 1  # calm for recover_s
    assert s.update(0.1, now=25.0) == 1  # each step down waits recover_s again
    assert s.update(0.1, now=26.0) == 0
    assert s.update(5.0, now=27.0) == 1
    for t in range(28, 40):
        s.update(9.0 + t, now=float(t))
    assert s.level == 3  # never past the last level


def sampled_frames(n: int, fps: float = 2.0) -> list[FrameRecord]:
    """n sampled frames, fps apart."""
    rng = np.random.default_rng(1)
    return [
        FrameRecord(pts=i / fps, thumb=rng.integers(0, 255, (36, 64), dtype=np.uint8), source_size=(64, 48),
                    image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        for i in range(n)
    ]


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_shedding_thins_the_same_time_grid_and_counts_what_it_skipped(level):
    metrics = build_metrics()
    a = Analyzer(face=None, metrics=metrics, sample_fps=2.0, model_every=2)
    a.shed_level = level
    records = sampled_frames(16)  # 8 s at 2 sampled frames/s
    model = [round(r.pts * 2) for r in a.model_frames(records)]
    assert model == list(range(0, 16, 4 if level >= 2 else 2))  # every 2nd grid point, every 4th when shed
    a.analyse_frames(records)
    kept = [round(r.pts * 2) for r in records if r.image is not None]
    assert kept == list(range(0, 16, 2 if level >= 3 else 1))
    assert all(r.analysed and r.signals for r in records if r.image is not None)
    assert all(not r.analysed for r in records if r.image is None)
    shed = metrics.registry.get_sample_value
    assert shed("fvq_analysis_shed_total", {"work": "frame"}) == (8 if level >= 3 else 0)
    assert shed("fvq_analysis_shed_total", {"work": "model"}) == (4 if level >= 2 else 0)


def test_a_backlogged_live_stream_raises_the_shed_level_and_the_backlog_gauge():
    cfg = MonitorConfig.model_validate({"no_model": True, "window": {"length_s": 4, "hop_s": 1},
                                        "analysis": {"shed_backlog_s": 0.5, "batch_interval_s": 0.001}})
    m = Monitor(cfg, Analyzer(face=None), build_metrics())
    stream = m.add_stream(dead_source("cam"))
    stream.reader.stop()
    m.FRAME_BATCH = 1  # one frame per call: the pass's 1 ms budget runs out long before 200 frames
    records = sampled_frames(200, fps=100.0)  # 2 s: no window closes, all of them wait in the backlog
    arrived = time.monotonic() - 2.0  # the analysis is 2 s behind this live stream
    for r in records:
        r.arrived = arrived
        stream.queue.put(r)
    m.step()
    reg = m.metrics.registry
    assert reg.get_sample_value("fvq_analysis_backlog_seconds") >= 2.0
    assert m.analyzer.shed_level == 1 and reg.get_sample_value("fvq_analysis_shed_level") == 1
    m.stop()


def test_only_streams_paced_in_real_time_count_as_live():
    from stream.live.monitor import Stream

    m = monitor()
    assert Stream(dead_source("rtmp"), m).live
    assert Stream(SourceConfig(name="paced", url="clip.mp4"), m).live  # files are paced like live by default
    assert not Stream(SourceConfig(name="fast", url="clip.mp4", realtime=False), m).live
    m.stop()
