"""fvq_quality_level carries the level of the published window as its help text says: 1 bad ... 5 excellent."""

from __future__ import annotations

import time

import pytest

from engines.features import LEVELS, WindowResult, level_of
from stream.config import MonitorConfig, SourceConfig
from stream.live.analysis import Analyzer
from stream.live.monitor import Monitor
from stream.ops.metrics import build_metrics
from tests.conftest import free_port


@pytest.fixture
def monitor():
    m = Monitor(MonitorConfig(no_model=True), Analyzer(face=None), build_metrics())
    stream = m.add_stream(SourceConfig(name="cam", url=f"rtmp://127.0.0.1:{free_port()}/live/cam"))
    stream.reader.stop()
    yield m
    m.stop()


def published_level(m: Monitor, score: float) -> float | None:
    dims = {"frame": {"blur": 90.0}}
    m._publish(time.monotonic(), WindowResult("cam", 0.0, 4.0, dims, 1.0, 0.1, 0.9, score=score, level=level_of(score)))
    return m.metrics.registry.get_sample_value("fvq_quality_level", {"stream": "cam"})


@pytest.mark.parametrize(("score", "level"), [
    (0.0, 1), (19.99, 1), (20.0, 2), (39.9, 2), (40.0, 3), (59.9, 3), (60.0, 4), (79.9, 4), (80.0, 5), (100.0, 5),
])
def test_the_level_published_for_a_score(monitor, score, level):
    assert published_level(monitor, score) == level


def test_levels_are_numbered_from_one_as_the_help_text_says(monitor):
    assert [published_level(monitor, 20.0 * i + 10.0) for i in range(len(LEVELS))] == [1, 2, 3, 4, 5]
    help_text = next(f.documentation for f in monitor.metrics.registry.collect() if f.name == "fvq_quality_level")
    assert "1 bad, 2 poor, 3 fair, 4 good, 5 excellent" in help_text
    assert [level_of(20.0 * i + 10.0) for i in range(len(LEVELS))] == list(LEVELS) == [
        "bad", "poor", "fair", "good", "excellent"]
