"""The webhook: Alertmanager-format firing and resolved notices to real receivers on loopback, retries with
backoff, and a receiver that hangs or fails never slows the monitor's window publishing."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from stream.config import AlertConfig, MonitorConfig
from stream.live.monitor import StreamState
from stream.ops.metrics import build_metrics
from stream.ops.recommend import ALERTS, CAUSES, Recommender
from stream.ops.webhook import ZERO_TIME, WebhookNotifier, fingerprint
from tests.ops.test_recommend import Clock, result


class Receiver:
    """A webhook receiver on 127.0.0.1: records bodies; `fail` first answers with 500s; `hang` sleeps first."""

    def __init__(self, fail: int = 0, hang_s: float = 0.0, status: int = 500) -> None:
        self.bodies: list[dict] = []
        self.attempts: list[float] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts.append(time.monotonic())
                if hang_s:
                    time.sleep(hang_s)
                if len(outer.attempts) <= fail:
                    self.send_response(status)
                    self.end_headers()
                    return
                outer.bodies.append(json.loads(body))
                outer.content_type = self.headers["Content-Type"]
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def outcome(registry, name: str) -> float:
    return registry.get_sample_value("fvq_webhook_notifications_total", {"outcome": name})


def test_firing_and_resolved_in_alertmanager_format():
    receiver = Receiver()
    metrics = build_metrics(CollectorRegistry())
    cfg = AlertConfig(webhook_url=receiver.url, raise_after_s=5, clear_after_s=5)
    hook = WebhookNotifier(cfg, metrics.registry, "http://127.0.0.1:9108").start()
    clock = Clock()
    rec = Recommender(cfg, metrics, clock)
    rec.notify.append(hook.notice)
    state = StreamState("cam", "rtmp_listen", "rtmp://x", metrics)
    state.bitrate_bps = 60_000
    try:
        for r, seconds in ((result(face={"artifact": 10}), 6), (result(face={}), 6)):
            for _ in range(seconds):
                rec.observe(state, r)
                clock.t += 1
        wait(lambda: len(receiver.bodies) == 2)
    finally:
        hook.stop()
        receiver.close()
    firing, resolved = receiver.bodies
    assert receiver.content_type == "application/json"
    for msg, status in ((firing, "firing"), (resolved, "resolved")):
        assert msg["version"] == "4" and msg["status"] == status and msg["receiver"] == "fvq"
        assert msg["groupKey"] == '{}:{alertname="FvqCompression", stream="cam"}'
        assert msg["groupLabels"] == {"alertname": "FvqCompression", "stream": "cam"}
        assert msg["externalURL"] == "http://127.0.0.1:9108" and msg["truncatedAlerts"] == 0
        (alert,) = msg["alerts"]
        assert alert["status"] == status
        assert alert["labels"] == {"alertname": "FvqCompression", "stream": "cam", "severity": "warning",
                                   "cause": "compression"}
        assert alert["annotations"]["action"] == "raise the bitrate (or use a slower encoder preset)"
        assert alert["annotations"]["summary"] == "cam: compression artifacts or blur at a low bitrate"
        assert alert["startsAt"] == "2023-11-14T22:13:25.000Z"  # raised 5 s after the first bad window
        assert alert["generatorURL"] == "http://127.0.0.1:9108/streams/cam"
        assert alert["fingerprint"] == fingerprint(alert["labels"])
        assert msg["commonLabels"] == alert["labels"]
    assert firing["alerts"][0]["endsAt"] == ZERO_TIME
    assert resolved["alerts"][0]["endsAt"] == "2023-11-14T22:13:31.000Z"  # gone at +6 s, cleared 5 s later
    assert outcome(metrics.registry, "sent") == 2


def test_failures_are_retried_with_exponential_backoff():
    receiver = Receiver(fail=3)
    registry = CollectorRegistry()
    cfg = AlertConfig(webhook_url=receiver.url, webhook_backoff_s=0.1, webhook_retries=4)
    hook = WebhookNotifier(cfg, registry).start()
    try:
        hook.notice("firing", "cam", CAUSES["stalls"], time.time(), None)
        wait(lambda: len(receiver.bodies) == 1)
    finally:
        hook.stop()
        receiver.close()
    gaps = [b - a for a, b in zip(receiver.attempts, receiver.attempts[1:], strict=False)]
    assert len(receiver.attempts) == 4
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39  # 0.1, 0.2, 0.4 s
    assert outcome(registry, "sent") == 1 and outcome(registry, "failed") == 0


def test_client_errors_are_not_retried_and_retries_are_bounded():
    bad_request, down = Receiver(fail=99, status=400), Receiver(fail=99, status=503)
    registries = [CollectorRegistry(), CollectorRegistry()]
    hooks = [WebhookNotifier(AlertConfig(webhook_url=r.url, webhook_backoff_s=0.05, webhook_retries=2), reg).start()
             for r, reg in zip((bad_request, down), registries, strict=True)]
    try:
        for h in hooks:
            h.notice("firing", "cam", CAUSES["camera"], time.time(), None)
        wait(lambda: all(outcome(reg, "failed") == 1 for reg in registries))
    finally:
        for h in hooks:
            h.stop()
        bad_request.close()
        down.close()
    assert len(bad_request.attempts) == 1  # 400: the receiver refuses this notice; retrying cannot help
    assert len(down.attempts) == 3  # 503: the first try and two retries, then given up


@pytest.fixture
def clip(media_dir):
    from tests.conftest import make_face_clip

    return make_face_clip(media_dir / "webhook.mp4", seconds=3.0, size="320x180")


def test_hanging_and_failing_receivers_do_not_slow_window_publishing(clip):
    """Every published window sends a notice to a receiver that hangs 3 s (timeout 1 s) and to one that always
    answers 500: the analysis thread's listeners stay fast, windows keep their pace, and the bounded queues drop."""
    from stream.live.analysis import Analyzer
    from tests.harness import MonitorHarness

    hanging, failing = Receiver(hang_s=3.0, fail=10**6), Receiver(fail=10**6)
    cfg = MonitorConfig.model_validate({
        "sources": [{"name": "cam", "url": str(clip), "loop": True}],
        "window": {"length_s": 1.0, "hop_s": 0.25},
        "no_model": True,
    })
    listener_s: list[float] = []
    with MonitorHarness(cfg, Analyzer(None, None, sample_fps=2.0)) as h:
        hooks = [
            WebhookNotifier(AlertConfig(webhook_url=r.url, webhook_timeout_s=1.0, webhook_backoff_s=0.2,
                                        webhook_queue_size=4), h.metrics.registry if r is hanging else None).start()
            for r in (hanging, failing)
        ]

        def flood(state, r):
            t0 = time.perf_counter()
            for hook in hooks:
                hook.notice("firing", state.name, ALERTS["FvqCompression"], time.time(), None)
            listener_s.append(time.perf_counter() - t0)

        h.monitor.listeners.append(flood)
        try:
            h.wait_for(lambda: (h.value("fvq_windows_analysed_total", stream="cam") or 0) >= 2, 20, "first windows")
            start_count, t0 = h.value("fvq_windows_analysed_total", stream="cam"), time.monotonic()
            time.sleep(4.0)
            published = h.value("fvq_windows_analysed_total", stream="cam") - start_count
            elapsed = time.monotonic() - t0
        finally:
            for hook in hooks:
                hook.stop(0.1)
            hanging.close()
            failing.close()
        dropped = h.value("fvq_webhook_notifications_total", outcome="dropped")
    # a window every 0.25 s of a real-time file: ~16 in 4 s; a blocking 3 s post per window would allow 1 or 2
    assert published >= 0.75 * elapsed / 0.25, (published, elapsed)
    assert max(listener_s) < 0.05, max(listener_s)
    assert dropped > 0  # the hanging receiver's queue overflowed and says so
    assert len(failing.attempts) >= 2
