"""Picture faults as a live encoder sends them, over RTMP to the monitor's listen port: each names its own cause.

The repo's clean sample (640x360, 25 fps) is rendered through the live-fault benchmark's encoder settings (x264
veryfast zerolatency, a keyframe every 2 s, 2 Mbit/s) with one fault each - a sigma-6 defocus, strong sensor
low light, a rendition down-switch after a clean lead-in - and published as it is (`ffmpeg -re -c copy`), one key per clip, beside the clean sample.
The blur must raise "source" (it used to fall 28-35 points and stay above the threshold), the grain "camera"
(the encoder smooths it into blocks: it used to read as compression), the dark picture "camera" (its colour and
artifact fall with it and must not outvote it), and the clean sample nothing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.fault_clips import BY_NAME, REPO, _part
from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.conftest import free_port, need
from tests.harness import MonitorHarness

pytestmark = pytest.mark.slow
SECONDS = 12.0
LEAD_S = 18.0  # the down-switched stream's clean past
# the upscaled down-switch: sharpness falls against the stream's own past, named as the catalogue's rendition_down
EXPECTED = {"clean": set(), "blur": {"source"}, "noise": {"camera"}, "lowlight": {"camera"}, "downswitch": {"rendition_down"}}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    need("ffmpeg")
    out = tmp_path_factory.mktemp("faults")
    sample = REPO / "samples" / "clean.mp4"
    paths = {}
    for name in EXPECTED:
        paths[name] = out / f"{name}.ts"
        _part(sample, 0.0, SECONDS, paths[name], None if name == "clean" else BY_NAME[name])
    # a down-switch is a fall against the stream's own past: clean first, then the 192x108 rendition
    lead, switched = out / "lead.ts", paths["downswitch"]
    _part(sample, 0.0, LEAD_S, lead, None)
    (out / "list.txt").write_text(f"file '{lead.name}'\nfile '{switched.name}'\n")
    paths["downswitch"] = out / "downswitch-after-clean.ts"
    subprocess.run([need("ffmpeg"), "-nostdin", "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i",
                    str(out / "list.txt"), "-c", "copy", str(paths["downswitch"])], check=True)
    return paths


def test_each_picture_fault_names_its_cause_over_rtmp_and_the_clean_stream_nothing(clips):
    from engines.face import FaceExtractor
    from stream.ops.recommend import start_recommendations

    port = free_port()
    cfg = MonitorConfig.model_validate({
        "sources": [{"name": "live", "url": f"rtmp://127.0.0.1:{port}/live", "listen": True}],
        "analysis": {"shed_load": False},
        "alerts": {"raise_after_s": 4, "clear_after_s": 30},
        "no_model": True,
    })
    raised: dict[str, set[str]] = {}
    latest: dict[str, object] = {}
    pubs: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        with MonitorHarness(cfg, Analyzer(FaceExtractor(), None, embed_every=0)) as h:
            pubs = [subprocess.Popen([need("ffmpeg"), "-nostdin", "-loglevel", "quiet", "-re", "-stream_loop", "-1",
                                      "-i", str(p), "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{name}"])
                    for name, p in clips.items()]
            recommender = start_recommendations(h.monitor)
            try:
                deadline = time.monotonic() + 100
                while time.monotonic() < deadline:
                    time.sleep(1.0)
                    streams = h.streams()
                    raised = {n: {c["cause"] for c in ((streams.get(n) or {}).get("recommendation") or {})
                                  .get("causes", [])} for n in clips}
                    latest = {n: ((streams.get(n) or {}).get("state"), (streams.get(n) or {}).get("latest"))
                              for n in clips}
                    seen = [((streams.get(n) or {}).get("latest") or {}).get("end", 0) for n in clips]
                    if all(raised[n] for n in clips if n != "clean") and min(seen) >= 16 and \
                            time.monotonic() - started > LEAD_S + 20:
                        break
            finally:
                recommender.stop()
    finally:
        for p in pubs:
            p.kill()
            p.wait()
    for name, want in EXPECTED.items():
        assert raised.get(name) == want, (name, raised, latest)
