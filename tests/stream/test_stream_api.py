"""The stream API on the real HTTP server: streams added, replaced and deleted at run time, the operator's labels,
the bearer token, reload of the config file (POST /api/v1/reload and SIGHUP to `fvq serve`), the state file."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from stream.config import MonitorConfig, load_config
from stream.http.catalog import attach_catalog
from stream.live.analysis import Analyzer
from tests.conftest import free_port
from tests.harness import MonitorHarness

pytestmark = pytest.mark.slow

BASE = {
    "window": {"length_s": 2.0, "hop_s": 1.0},
    "analysis": {"stale_after_s": 2.0, "batch_interval_s": 0.05, "sample_fps": 1.0},
    "no_model": True,
}


@pytest.fixture(scope="module")
def face_extractor():
    from engines.face import FaceExtractor

    return FaceExtractor()


def analyzer(face) -> Analyzer:
    return Analyzer(face, None, embed_every=0, sample_fps=1.0)


def src(name: str, clip: Path, **extra) -> dict:
    return {"name": name, "url": str(clip), "loop": True, **extra}


def call(h: MonitorHarness, method: str, path: str, body: dict | None = None, token: str | None = None,
         base: str | None = None) -> tuple[int, dict | None]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request((base or h.url) + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    return status, (json.loads(raw) if raw else None)


def test_add_replace_delete_with_labels(face_extractor, face_clip):
    cfg = MonitorConfig.model_validate({**BASE, "sources": [src("a", face_clip, labels={"channel": "news"})]})
    with MonitorHarness(cfg, analyzer(face_extractor)) as h:
        a = h.monitor.streams["a"]
        status, body = call(h, "GET", "/api/v1/streams")
        assert status == 200 and [s["name"] for s in body["streams"]] == ["a"]
        assert body["streams"][0]["origin"] == "config"
        assert h.value("fvq_stream_info", stream="a", channel="news") == 1

        posted = time.monotonic()
        status, body = call(h, "POST", "/api/v1/streams",
                            src("b", face_clip, labels={"channel": "sport", "region": "eu-west"}))
        assert status == 201, body
        assert body["origin"] == "api" and body["source"]["labels"] == {"channel": "sport", "region": "eu-west"}
        h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="b") or 0) > 0, 2.0, "b's first frame")
        print(f"stream b decoding {time.monotonic() - posted:.2f} s after the POST")
        assert h.value("fvq_stream_info", stream="b", channel="sport", region="eu-west") == 1

        # refusals name what is wrong
        status, body = call(h, "POST", "/api/v1/streams", src("b", face_clip))
        assert status == 409 and "'b'" in body["error"]
        status, body = call(h, "POST", "/api/v1/streams", src("c", face_clip, colour="red"))
        assert status == 400 and "colour" in body["error"] and "unknown key" in body["error"]
        status, body = call(h, "POST", "/api/v1/streams", src("c", face_clip, labels={"0bad": "x"}))
        assert status == 400 and "0bad" in body["error"]
        status, body = call(h, "POST", "/api/v1/streams", src("c", face_clip, labels={"stream": "x"}))
        assert status == 400 and "reserved" in body["error"]
        status, body = call(h, "POST", "/api/v1/streams", {"name": "c", "url": "whip:c", "kind": "whip"})
        assert status == 400 and "WHIP" in body["error"]
        status, body = call(h, "POST", "/api/v1/streams", src("c", face_clip, persist=True))
        assert status == 400 and "persist" in body["error"]  # no config file to keep it next to
        assert "c" not in h.streams()

        # PUT with the same source touches nothing; with other labels it replaces the stream
        b = h.monitor.streams["b"]
        status, body = call(h, "PUT", "/api/v1/streams/b",
                            {"url": str(face_clip), "loop": True, "labels": {"channel": "sport", "region": "eu-west"}})
        assert status == 200 and h.monitor.streams["b"] is b
        status, body = call(h, "PUT", "/api/v1/streams/b", src("b", face_clip, labels={"channel": "film"}))
        assert status == 200 and h.monitor.streams["b"] is not b
        assert h.value("fvq_stream_info", stream="b", channel="film") == 1
        assert h.value("fvq_stream_info", stream="b", channel="sport", region="eu-west") is None
        status, body = call(h, "PUT", "/api/v1/streams/b", src("other", face_clip))
        assert status == 400 and "other" in body["error"]
        # a refused PUT leaves the stream as it was (a FIFO is found before anything is changed)
        fifo = face_clip.parent / "put-fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        kept = h.monitor.streams["b"]
        status, body = call(h, "PUT", "/api/v1/streams/b", src("b", fifo))
        assert status == 400 and "FIFO" in body["error"]
        assert h.monitor.streams.get("b") is kept

        status, _ = call(h, "DELETE", "/api/v1/streams/b")
        assert status == 204
        assert "b" not in h.streams()
        scrape = h.scrape()
        assert not [k for k in scrape if ("stream", "b") in k[1]], "series of b left behind"
        status, body = call(h, "DELETE", "/api/v1/streams/b")
        assert status == 404 and "'b'" in body["error"]
        status, _ = call(h, "GET", "/api/v1/streams/b")
        assert status == 404
        # secrets stay out of the answers
        status, body = call(h, "POST", "/api/v1/streams", {"name": "sec", "url": "rtsp://user:hunter2@127.0.0.1:9/cam"})
        assert status == 201 and "hunter2" not in json.dumps(body)
        listen = {"name": "rtmp", "url": f"rtmp://127.0.0.1:{free_port()}/live", "listen": True,
                  "publish_tokens": {"*": "t0psecret"}}
        status, body = call(h, "POST", "/api/v1/streams", listen)
        assert status == 201 and body["source"]["publish_tokens"] == {"*": "***"}
        listing = json.dumps(call(h, "GET", "/api/v1/streams")[1])
        assert "hunter2" not in listing and "t0psecret" not in listing
        assert call(h, "DELETE", "/api/v1/streams/sec")[0] == 204
        assert call(h, "DELETE", "/api/v1/streams/rtmp")[0] == 204
        assert h.monitor.streams["a"] is a and h.value("fvq_stream_up", stream="a") == 1  # never touched


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_token_and_loopback_only(face_extractor):
    cfg = MonitorConfig.model_validate({**BASE, "server": {"api_token": "s3cret"}})
    with MonitorHarness(cfg, analyzer(face_extractor)) as h:
        status, body = call(h, "GET", "/api/v1/streams")
        assert status == 401 and "Authorization" in body["error"]
        status, body = call(h, "GET", "/api/v1/streams", token="wrong")
        assert status == 401 and "wrong" in body["error"]
        assert call(h, "GET", "/api/v1/streams", token="s3cret")[0] == 200
        assert h.get("/metrics")[0] == 200  # the rest of the server is not behind the API's token
    other = _non_loopback_address()
    if other is None:
        pytest.skip("this machine has no non-loopback address to call from")
    cfg = MonitorConfig.model_validate(BASE)
    with MonitorHarness(cfg, analyzer(face_extractor), host="0.0.0.0") as h:
        assert call(h, "GET", "/api/v1/streams")[0] == 200  # from loopback
        status, body = call(h, "GET", "/api/v1/streams", base=f"http://{other}:{h.port}")
        assert status == 403 and "loopback" in body["error"]
        status, body = call(h, "POST", "/api/v1/streams", {"name": "x", "url": "/nonexistent.mp4"},
                            base=f"http://{other}:{h.port}")
        assert status == 403 and "x" not in h.streams()


def write_config(path: Path, sources: list[dict]) -> None:
    # workers: 1 pinned: these tests are about the single process, whatever `auto` gives on the machine
    path.write_text(yaml.safe_dump({**BASE, "workers": 1, "sources": sources}))


def test_reload_applies_the_difference_and_persisted_streams_survive(face_extractor, face_clip, tmp_path, caplog):
    conf = tmp_path / "fvq.yaml"
    write_config(conf, [src("a", face_clip), src("b", face_clip)])
    h = MonitorHarness(load_config(conf), analyzer(face_extractor))
    attach_catalog(h.monitor, conf)
    with h:
        a = h.monitor.streams["a"]
        write_config(conf, [src("a", face_clip), src("c", face_clip, labels={"channel": "new"})])
        status, body = call(h, "POST", "/api/v1/reload")
        assert status == 200, body
        assert (body["added"], body["removed"], body["unchanged"]) == (["c"], ["b"], ["a"])
        assert h.monitor.streams["a"] is a  # untouched: same reader, counters go on
        assert set(h.streams()) == {"a", "c"}
        assert h.value("fvq_stream_info", stream="c", channel="new") == 1
        assert h.value("fvq_stream_up", stream="b") is None
        conf.write_text("sources: [{name: a, url: x, speling: 1}]")
        status, body = call(h, "POST", "/api/v1/reload")
        assert status == 400 and "speling" in body["error"]
        assert set(h.streams()) == {"a", "c"}  # a bad file changes nothing
        write_config(conf, [src("a", face_clip), src("c", face_clip, labels={"channel": "new"})])

        status, body = call(h, "POST", "/api/v1/streams", src("kept", face_clip, persist=True))
        assert status == 201, body
        status, body = call(h, "POST", "/api/v1/streams", src("gone", face_clip))
        assert status == 201
    state = tmp_path / "fvq.streams.json"
    assert [s["name"] for s in json.loads(state.read_text())["streams"]] == ["kept"]
    assert not list(tmp_path.glob("*.tmp")), "the atomic write left its temporary file"

    # a restart: the persisted stream comes back, the other API stream does not
    h = MonitorHarness(load_config(conf), analyzer(face_extractor))
    catalog = attach_catalog(h.monitor, conf)
    with h:
        assert catalog.load_state() == ["kept"]
        assert set(h.streams()) == {"a", "c", "kept"}
        assert call(h, "GET", "/api/v1/streams/kept")[1]["origin"] == "api"
        assert call(h, "DELETE", "/api/v1/streams/kept")[0] == 204
    assert json.loads(state.read_text())["streams"] == []

    # a corrupt state file is reported and ignored
    state.write_text('{"version": 1, "streams": [{"name": "x"')
    h = MonitorHarness(load_config(conf), analyzer(face_extractor))
    catalog = attach_catalog(h.monitor, conf)
    with h, caplog.at_level(logging.ERROR, logger="stream.http.catalog"):
        assert catalog.load_state() == []
        assert set(h.streams()) == {"a", "c"}
    assert any("corrupt" in r.message and str(state) in r.message for r in caplog.records)


def test_sighup_reloads_fvq_serve(face_clip, tmp_path):
    conf = tmp_path / "fvq.yaml"
    write_config(conf, [src("a", face_clip)])
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "fvq", "serve", "--config", str(conf), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def names() -> set[str]:
        with urllib.request.urlopen(base + "/api/v1/streams", timeout=5) as r:
            return {s["name"] for s in json.loads(r.read())["streams"]}

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if names() == {"a"}:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "start"
            time.sleep(0.3)
        write_config(conf, [src("a", face_clip), src("b", face_clip)])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while names() != {"a", "b"}:
            assert time.monotonic() < deadline, "SIGHUP did not add stream b"
            time.sleep(0.2)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
