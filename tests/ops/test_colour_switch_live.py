"""A colour pipeline that switches mid-stream is named on a live stream: ffmpeg swaps the chroma planes
(shuffleplanes, NV12 read as NV21) or converts full range to limited (lutyuv) four seconds in; the monitor (the real
decode path, paced in real time) raises colour_switch on those streams and exports the switch, and a clean stream of
the same clip raises nothing; the stream keeps the pictures before and after the switch as its evidence."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from stream.config import MonitorConfig
from stream.live.analysis import build_analyzer
from tests.harness import MonitorHarness

ROOT = Path(__file__).resolve().parents[2]
WASH = "16+val*219/255"
CHROMA = "128+(val-128)*224/255"
FILTERS = {
    "clean": None,
    "swap": "shuffleplanes=0:2:1:enable='gte(t,4)'",
    "range_washed": f"lutyuv=y='{WASH}':u='{CHROMA}':v='{CHROMA}':enable='gte(t,4)'",
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("switches")
    paths = {}
    for name, vf in FILTERS.items():
        paths[name] = out / f"{name}.mp4"
        cmd = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(ROOT / "samples" / "clean.mp4")]
        cmd += ["-vf", vf] if vf else []
        subprocess.run(cmd + ["-c:v", "libx264", "-crf", "18", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                              str(paths[name])], check=True)
    return paths


def test_a_pipeline_switching_mid_stream_is_named_live(clips):
    from stream.ops.recommend import start_recommendations

    cfg = MonitorConfig.model_validate({
        "sources": [{"name": n, "url": str(p), "realtime": True} for n, p in clips.items()],
        "alerts": {"raise_after_s": 2, "clear_after_s": 30},
        "no_model": True,
    })
    with MonitorHarness(cfg, build_analyzer(cfg)) as h:
        recommender = start_recommendations(h.monitor)
        try:
            raised: dict[str, set[str]] = {n: set() for n in clips}
            switched: dict[str, float | None] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                time.sleep(0.5)
                streams = h.streams()
                for n in clips:
                    rec = (streams.get(n) or {}).get("recommendation") or {}
                    raised[n] |= {c["cause"] for c in rec.get("causes", [])}
                    if n != "clean":
                        switched[n] = switched.get(n) or h.value("fvq_picture_colour_switched", stream=n, switch=n)
                if all("colour_switch" in raised[n] for n in clips if n != "clean") and all(switched.values()):
                    break
            assert "colour_switch" in raised["swap"] and switched["swap"] == 1, (raised, switched)
            assert "colour_switch" in raised["range_washed"] and switched["range_washed"] == 1, (raised, switched)
            assert "colour_switch" not in raised["clean"], raised
            # what the monitor saw: the picture after the switch and the one before it, over HTTP
            for part in ("colour_switch", "colour_switch-clean"):
                status, body = h.get(f"/streams/swap/evidence/{part}.jpg")
                assert status == 200 and body[:2] == b"\xff\xd8", (part, status)
        finally:
            recommender.stop()
