"""The pages and frames on a running monitor: who may see them, server.frames off, and on the demo's degraded
sample live, the evidence of each raised cause (from the window that raised it) and the webhook's links to it."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from stream.config import MonitorConfig, ServerConfig
from stream.http.viewer import VIEWER_COOKIE, viewer_refusal
from stream.live.analysis import build_analyzer
from stream.live.evidence import _window_scores
from stream.live.timeline import preferred_region
from stream.ops.recommend import is_low_bitrate, start_recommendations, window_causes
from tests.harness import MonitorHarness
from tests.ops.test_webhook import Receiver, wait

ROOT = Path(__file__).resolve().parents[2]
DEGRADED = ROOT / "samples" / "degraded.mp4"
CLEAN = ROOT / "samples" / "clean.mp4"


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default=None):
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def request_from(peer: str, path: str = "/", headers: dict | None = None):
    return make_mocked_request("GET", path, headers=headers or {}, transport=_Transport(peer), app=web.Application())


def test_access_rules_off_loopback():
    none = ServerConfig()
    assert viewer_refusal(request_from("127.0.0.1"), none) is None
    assert viewer_refusal(request_from("::1"), none) is None
    status, why = viewer_refusal(request_from("10.1.2.3"), none)
    assert status == 403 and "loopback" in why
    both = ServerConfig(api_token="api-secret", viewer_token="look-only")
    assert viewer_refusal(request_from("10.1.2.3"), both)[0] == 401
    assert viewer_refusal(request_from("127.0.0.1"), both)[0] == 401  # a token set: loopback needs it too (the API's rule)
    for token in ("api-secret", "look-only"):
        assert viewer_refusal(request_from("10.1.2.3", headers={"Authorization": f"Bearer {token}"}), both) is None
        assert viewer_refusal(request_from("10.1.2.3", f"/?token={token}"), both) is None
        assert viewer_refusal(request_from("10.1.2.3", headers={"Cookie": f"{VIEWER_COOKIE}={token}"}), both) is None
    status, why = viewer_refusal(request_from("10.1.2.3", headers={"Authorization": "Bearer nope"}), both)
    assert status == 401 and "wrong" in why


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def source(name: str, path: Path) -> dict:
    return {"name": name, "url": str(path), "loop": True, "realtime": True}


def wait_for(predicate, what: str, timeout: float = 40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_pages_and_frames_follow_the_tokens_and_frames_off(tmp_path):
    cfg = MonitorConfig.model_validate({"workers": 1, "no_model": True, "sources": [source("cam", CLEAN)],
                                        "server": {"api_token": "api-secret", "viewer_token": "look-only"}})
    with MonitorHarness(cfg, build_analyzer(cfg)) as h:
        wait_for(lambda: h.monitor.evidence.latest_jpeg("cam"), "a first analysed frame")
        assert get(h.url + "/")[0] == 401
        assert get(h.url + "/streams/cam/frame.jpg")[0] == 401
        status, body, headers = get(h.url + "/?token=look-only")
        assert status == 200 and b'data-stream="cam"' in body
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, body, headers = get(h.url + "/streams/cam/frame.jpg", {"Cookie": cookie.split(";")[0]})
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and headers["Cache-Control"] == "no-store"
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (180, 320, 3)
        # the viewer token opens the pages, never the stream API
        assert get(h.url + "/api/v1/streams", {"Authorization": "Bearer look-only"})[0] == 401
        assert get(h.url + "/streams/cam")[0] == 200  # the JSON stays as open as /streams and /metrics
        assert (h.value("fvq_status_frames_bytes") or 0) > 50_000  # its timeline (the hour, fixed) and frames
    cfg = MonitorConfig.model_validate({"workers": 1, "no_model": True, "sources": [source("cam", CLEAN)],
                                        "server": {"frames": False}})
    with MonitorHarness(cfg, build_analyzer(cfg)) as h:
        wait_for(lambda: h.monitor.evidence.timeline("cam"), "a first window")
        status, body, _ = get(h.url + "/streams/cam/frame.jpg")
        assert status == 404 and b"server.frames" in body
        assert h.monitor.evidence.latest_jpeg("cam") is None
        status, body, _ = get(h.url + "/streams/cam", {"Accept": "text/html"})
        assert status == 200 and b"<img" not in body and b"frames are off" in body
        assert json.loads(get(h.url + "/streams/cam")[1])["frames"] is None
    other = _non_loopback_address()
    if other is None:
        pytest.skip("this machine has no non-loopback address to call from")
    cfg = MonitorConfig.model_validate({"workers": 1, "no_model": True, "sources": [source("cam", CLEAN)]})
    with MonitorHarness(cfg, build_analyzer(cfg), host="0.0.0.0") as h:
        wait_for(lambda: h.monitor.evidence.latest_jpeg("cam"), "a first analysed frame")
        assert get(f"http://127.0.0.1:{h.port}/streams/cam/frame.jpg")[0] == 200
        for path in ("/", "/streams/cam/frame.jpg", "/streams/cam/clean.jpg"):
            status, body, _ = get(f"http://{other}:{h.port}{path}")
            assert status == 403 and b"loopback" in body, path


def test_degraded_sample_evidence_comes_from_the_raising_window_and_the_webhook_links_it():
    receiver = Receiver()
    cfg = MonitorConfig.model_validate({
        "workers": 1, "sources": [source("degraded", DEGRADED)],
        "server": {"public_url": "https://fvq.example.com/"},
        "alerts": {"webhook_url": receiver.url, "raise_after_s": 2, "clear_after_s": 60},
    })
    h = MonitorHarness(cfg, build_analyzer(cfg))
    seen: list[tuple] = []  # every window the store was shown: (window, the causes it shows, its own scores)
    store = h.monitor.evidence
    observe = store.observe

    def recording(state, window, result):
        low = is_low_bitrate(state.bitrate_bps, state.width, state.height, state.fps, cfg.alerts)
        raw = _window_scores(window, preferred_region(result), {}) if window is not None else {}
        seen.append(((window.start, window.end), window_causes(result, low, cfg.alerts), raw))
        observe(state, window, result)

    store.observe = recording
    try:
        with h:
            recommender = start_recommendations(h.monitor)
            try:
                wait(lambda: any(b["status"] == "firing" for b in receiver.bodies), timeout=60)
                evidence = json.loads(h.get("/streams/degraded")[1])["evidence"]
            finally:
                recommender.stop()
            firing = [b["alerts"][0] for b in receiver.bodies if b["status"] == "firing"]
            alert = firing[0]
            cause = alert["labels"]["cause"]
            notes = alert["annotations"]
            assert notes["stream_url"] == "https://fvq.example.com/streams/degraded"
            assert alert["generatorURL"] == notes["stream_url"]
            prefix = "https://fvq.example.com/streams/degraded/evidence/"
            assert notes["evidence_url"].startswith(prefix) and notes["evidence_url"].endswith(".jpg")
            ident = notes["evidence_url"][len(prefix):-len(".jpg")]
            (ev,) = [e for e in evidence if e["id"] == ident]
            assert ev["cause"] == cause
            status, body = h.get(f"/streams/degraded/evidence/{ident}.jpg")
            assert status == 200
            picture = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape[:2] == (ev["size"][1], ev["size"][0]) == (180, 320)
    finally:
        receiver.close()
    # the window that raised the cause: the first of its episode; or a later one of the same episode that showed
    # it more (sharpened), and then no window of the episode before it showed it as much
    windows = [(span, causes, raw) for span, causes, raw in seen]
    span = tuple(ev["window"])
    index = next(i for i, (s, _, _) in enumerate(windows) if (round(s[0], 3), round(s[1], 3)) == span)
    assert cause in windows[index][1]
    start = index
    while start > 0 and cause in windows[start - 1][1]:
        start -= 1
    family = ev["family"]
    assert abs(windows[index][2][family] - ev["value"]) < 0.06
    if index > start:
        assert all(raw[family] > ev["value"] for _, _, raw in windows[start:index]), "sharpened without need"
    else:
        assert ev["sharpened"] == 0
