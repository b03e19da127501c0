"""Secrets stay out of every output: a real `fvq serve` whose sources and webhook carry credentials, read over
/streams, /metrics and its log; the webhook's credentials travel as Basic auth to a real receiver."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry

from stream.config import AlertConfig
from stream.ops.recommend import CAUSES
from stream.ops.webhook import WebhookNotifier
from stream.redact import redact_text, redact_url
from tests.conftest import free_port

SECRETS = ["rtsp-secret-1", "stream-key-secret-2", "http-secret-3", "hls-token-4", "srt-pass-5", "srt-stream-6",
           "hook-secret-7"]


def test_redact_url_cases() -> None:
    assert redact_url("rtsp://alice:pw@cam:554/live/ch1") == "rtsp://***@cam:554/live/ch1"
    assert redact_url("rtsp://alice:pw@cam/x") == "rtsp://***@cam/x"  # one path segment too
    assert redact_url("rtmp://h/app/KEY") == "rtmp://h/app/***"
    assert redact_url("https://cdn/i.m3u8?token=T&quality=hd") == "https://cdn/i.m3u8?token=***&quality=hd"
    assert redact_url("srt://h:9?passphrase=P&streamid=#!::r=live,m=publish&latency=20") == \
        "srt://h:9?passphrase=***&streamid=***&latency=20"
    assert redact_url("/media/a.mp4") == "/media/a.mp4"
    assert redact_text("open rtsp://u:p@h/x failed; key=rtmp://h/a/K") == "open rtsp://***@h/x failed; key=rtmp://h/a/***"


class Receiver:
    """A webhook receiver on 127.0.0.1 recording each request's Authorization header; answers 503 first."""

    def __init__(self, fail: int) -> None:
        self.auth: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.auth.append(self.headers.get("Authorization"))
                self.send_response(503 if len(outer.auth) <= fail else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_credentials_go_as_basic_auth_and_never_into_the_log(caplog) -> None:
    caplog.set_level(logging.INFO)
    receiver = Receiver(fail=1)
    cfg = AlertConfig(webhook_url=f"http://hook:hook-secret-7@127.0.0.1:{receiver.port}/hook",
                      webhook_backoff_s=0.05)
    hook = WebhookNotifier(cfg, CollectorRegistry()).start()
    try:
        hook.notice("firing", "cam", CAUSES["stalls"], time.time(), None)
        deadline = time.monotonic() + 10
        while len(receiver.auth) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        hook.stop()
        receiver.close()
    assert receiver.auth == ["Basic " + base64.b64encode(b"hook:hook-secret-7").decode()] * 2
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP 503" in text and "retrying" in text  # the failure was logged...
    assert "hook-secret-7" not in text  # ...without the password


def test_serve_shows_no_secret_in_streams_metrics_or_log(tmp_path) -> None:
    closed = free_port()  # nothing listens there: every source fails to open and retries
    receiver = Receiver(fail=0)
    port = free_port()
    cfg = tmp_path / "secrets.yaml"
    cfg.write_text(
        "sources:\n"
        f"  - {{name: cam, url: 'rtsp://alice:rtsp-secret-1@127.0.0.1:{closed}/live/ch1'}}\n"
        f"  - {{name: pub, url: 'rtmp://127.0.0.1:{closed}/app/stream-key-secret-2'}}\n"
        f"  - {{name: hls, url: 'http://bob:http-secret-3@127.0.0.1:{closed}/hls/i.m3u8?token=hls-token-4'}}\n"
        f"  - {{name: srt, url: 'srt://127.0.0.1:{closed}?passphrase=srt-pass-5&streamid=srt-stream-6'}}\n"
        f"alerts: {{webhook_url: 'http://hook:hook-secret-7@127.0.0.1:{receiver.port}/hook'}}\n"
        "server: {whip_token: whip-token-8}\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "fvq", "serve", "--config", str(cfg), "--no-model",
                             "--port", str(port), "--duration", "12"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        streams = metrics = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/streams", timeout=5) as r:
                    streams = r.read().decode()
            except OSError:
                continue
            errors = [s["last_error"] for s in json.loads(streams)["streams"]]
            if sum(1 for e in errors if e) >= 3:
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        receiver.close()
    shown = json.loads(streams)["streams"]
    assert sum(1 for s in shown if s["last_error"]) >= 3, shown  # the sources failed and said why
    assert "rtsp://***@127.0.0.1" in streams and "app/***" in streams and "token=***" in streams
    assert "stream cam" in err  # the log names the failures
    assert "WHIP ingest needs `Authorization: Bearer <server.whip_token>`" in out  # said at start-up
    for secret in SECRETS + ["whip-token-8"]:
        for name, text in (("/streams", streams), ("/metrics", metrics), ("stdout", out), ("log", err)):
            assert secret not in text, f"{secret} appears in {name}"


def test_log_hygiene_redacts_and_rate_limits_repeats() -> None:
    import io

    from stream.ops.logs import LogHygiene

    now = [0.0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LogHygiene(window_s=60, clock=lambda: now[0]))
    logger = logging.getLogger("test.hygiene")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for _ in range(1000):  # a source failing to reopen in a loop
            logger.warning("open %s failed", "rtsp://u:pw-secret@cam/x")
        logger.warning("another message")
        now[0] = 61.0
        logger.warning("open %s failed", "rtsp://u:pw-secret@cam/x")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == ["open rtsp://***@cam/x failed", "another message",
                     "open rtsp://***@cam/x failed [repeated 999 more times in the last 60 s]"]
