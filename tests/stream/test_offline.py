"""`fvq score`'s path (stream/live/offline.py) and the live analysis loop take the same steps and give the same windows."""

from __future__ import annotations

import time

from stream.config import MonitorConfig, SourceConfig
from stream.live.analysis import Analyzer
from stream.live.monitor import Monitor
from stream.live.offline import analyse_file
from stream.ops.metrics import build_metrics


def _key(results):
    return [(r.start, r.end, r.face_presence, r.dimensions) for r in results]


def test_a_file_scored_offline_matches_the_live_loop(face_clip):
    cfg = MonitorConfig.model_validate({"no_model": True, "window": {"length_s": 2, "hop_s": 1},
                                        "analysis": {"shed_load": False}})
    offline = analyse_file(face_clip, cfg, Analyzer(face=None))
    assert offline.nominal_fps == 25
    # a 6 s clip: 2 s windows every second, the last one closed by the end of the file
    assert [(r.start, r.end) for r in offline.results] == [(float(i), float(i + 2)) for i in range(5)]

    live = Monitor(cfg, Analyzer(face=None), build_metrics())
    stream = live.add_stream(SourceConfig(name="file", url=str(face_clip), realtime=False))
    published = []
    deadline = time.monotonic() + 60
    while not stream.finished and time.monotonic() < deadline:
        published.extend(live.step())
        time.sleep(0.05)
    live.stop()
    assert stream.finished, "the live loop never saw the file end"
    # the same windows, with the same measurements
    assert _key(published) == _key(offline.results)
