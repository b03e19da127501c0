"""The monitor's own bookkeeping: late windows skipped and counted, the stream cap, series of a removed stream."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engines.features import FrameRecord
from stream.analysis import Analyzer
from stream.config import MonitorConfig, SourceConfig
from stream.metrics import build_metrics
from stream.monitor import Monitor, StreamExistsError, StreamLimitError
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
