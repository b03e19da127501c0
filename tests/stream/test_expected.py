"""Expected streams from the stream API and from hooks: their publisher leaving makes them `down` (listed,
fvq_stream_up 0, holding their name) until it is back; a stream not expected ends instead and leaves after the
retention."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.harness import MonitorHarness
from tests.stream.test_workers import small_clip as small_clip  # noqa: F401 - the fixture


def _post(h: MonitorHarness, path: str, body: dict) -> int:
    req = urllib.request.Request(h.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def test_hook_streams_marked_expected_go_down_and_come_back(small_clip: Path) -> None:  # noqa: F811
    config = MonitorConfig.model_validate({
        "window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True,
        "limits": {"ended_retention_s": 1.0},
        "hooks": {"pull_url": str(small_clip.parent) + "/{name}.mp4", "expected": True},
    })
    with MonitorHarness(config, Analyzer(face=None, rater=None)) as h:
        publish = {"action": "on_publish", "app": "live", "stream": small_clip.stem}
        assert _post(h, "/hooks/srs/on_publish", publish) == 200
        h.wait_for(lambda: h.streams()[small_clip.stem]["state"] == "up", 15, "the hook stream up")
        assert _post(h, "/hooks/srs/on_unpublish", {**publish, "action": "on_unpublish"}) == 200
        h.wait_for(lambda: h.streams()[small_clip.stem]["state"] == "down", 5, "the expected stream down")
        time.sleep(2.0)  # past the retention: an expected stream does not leave
        assert h.streams()[small_clip.stem]["state"] == "down"
        assert h.value("fvq_stream_up", stream=small_clip.stem) == 0
        assert h.value("fvq_streams_active") == 0
        assert _post(h, "/hooks/srs/on_publish", publish) == 200  # the publisher is back
        h.wait_for(lambda: h.streams()[small_clip.stem]["state"] == "up", 15, "the stream up again")
        # through the API: `expected` is a source field; one that is not expected ends and leaves
        assert _post(h, "/api/v1/streams", {"name": "plain", "url": str(small_clip), "realtime": False}) == 201
        h.wait_for(lambda: "plain" not in h.streams(), 20, "a finished stream that is not expected to leave")
        assert _post(h, "/api/v1/streams", {"name": "kept", "url": str(small_clip), "realtime": False,
                                            "expected": True}) == 201
        h.wait_for(lambda: h.streams().get("kept", {}).get("state") == "down", 20, "the expected file down")
        time.sleep(2.0)
        assert h.streams()["kept"]["state"] == "down"
