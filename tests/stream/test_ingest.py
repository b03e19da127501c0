"""End to end with the real programs on loopback: ffmpeg publishing over RTMP to the monitor and to nginx-rtmp,
an HLS playlist written by ffmpeg and pulled over HTTP, publishers that vanish, URLs that refuse."""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.conftest import free_port, need
from tests.harness import MonitorHarness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def face_extractor():
    from engines.face import FaceExtractor

    return FaceExtractor()


def analyzer(face) -> Analyzer:
    return Analyzer(face, None, embed_every=1, sample_fps=2.0)


def config(*sources: dict) -> MonitorConfig:
    return MonitorConfig.model_validate({
        "sources": list(sources),
        "window": {"length_s": 2.0, "hop_s": 1.0},
        "analysis": {"stale_after_s": 2.0, "batch_interval_s": 0.05},
        "no_model": True,
    })


def publish(src: Path, url: str, seconds: float | None = None) -> subprocess.Popen:
    cmd = [need("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(src)]
    if seconds:
        cmd += ["-t", str(seconds)]
    return subprocess.Popen(cmd + ["-c", "copy", "-f", "flv", url])


def assert_stream_measured(h: MonitorHarness, name: str) -> None:
    # a few windows in, past the publisher's start-up burst
    h.wait_for(lambda: (h.value("fvq_windows_analysed_total", stream=name) or 0) >= 4, 40, f"windows of {name}")
    assert h.value("fvq_stream_up", stream=name) == 1
    assert h.value("fvq_frames_received_total", stream=name) > 40
    assert h.value("fvq_face_presence_ratio", stream=name) > 0.5
    assert 20 <= h.value("fvq_stream_fps", stream=name) <= 30
    assert h.value("fvq_stream_bitrate_bits_per_second", stream=name) > 10_000
    for dim in ("blur", "noise", "color", "artifact", "luminance", "temporal"):
        v = h.value("fvq_dimension_score", stream=name, dimension=dim, region="face")
        assert v is not None and 0 <= v <= 100, dim
    info = h.streams()[name]
    assert info["resolution"] == [640, 360] and info["state"] == "up"


def test_rtmp_listen_publisher_disconnects_and_returns(face_extractor, face_clip_flv):
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/cam"
    with MonitorHarness(config({"name": "cam", "url": url, "listen": True}), analyzer(face_extractor)) as h:
        time.sleep(0.5)
        pub = publish(face_clip_flv, url)
        try:
            assert_stream_measured(h, "cam")
        finally:
            pub.kill()
            pub.wait()
        # the publisher vanished mid-stream: the stream goes down, the monitor listens again
        h.wait_for(lambda: h.value("fvq_stream_up", stream="cam") == 0, 20, "stream down after disconnect")
        before = h.value("fvq_windows_analysed_total", stream="cam")
        pub = publish(face_clip_flv, url)
        try:
            h.wait_for(lambda: h.value("fvq_windows_analysed_total", stream="cam") > before + 1, 40, "second publish")
            assert h.value("fvq_stream_up", stream="cam") == 1
        finally:
            pub.kill()
            pub.wait()


@pytest.fixture
def nginx_rtmp(tmp_path):
    need("nginx")
    module = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
    if not module.exists():
        pytest.fail("libnginx-mod-rtmp is not installed: run `make setup`")
    port = free_port()
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
load_module {module};
daemon off;
master_process off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log warn;
events {{ worker_connections 64; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "logs/error.log")])
    deadline = time.monotonic() + 10
    import socket

    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("nginx-rtmp did not start")
    yield f"rtmp://127.0.0.1:{port}/live"
    proc.terminate()
    proc.wait(5)


def test_rtmp_pull_from_nginx_and_a_refusing_url_beside_it(face_extractor, face_clip_flv, nginx_rtmp):
    url = f"{nginx_rtmp}/studio"
    pub = publish(face_clip_flv, url)
    try:
        time.sleep(1.0)
        dead = f"rtmp://127.0.0.1:{free_port()}/live/nothing"
        cfg = config({"name": "studio", "url": url}, {"name": "dead", "url": dead})
        with MonitorHarness(cfg, analyzer(face_extractor)) as h:
            assert_stream_measured(h, "studio")
            # the refusing URL is down, retried with backoff, and did not disturb the other stream
            assert h.value("fvq_stream_up", stream="dead") == 0
            assert h.value("fvq_stream_errors_total", stream="dead", kind="open") >= 1
            h.wait_for(lambda: (h.value("fvq_stream_reconnects_total", stream="dead") or 0) >= 2, 20, "reconnects")
            dead_info = h.streams()["dead"]
            assert dead_info["state"] == "error" and "127.0.0.1" in dead_info["last_error"]
            assert "/***" in dead_info["url"]  # stream keys stay out of /streams
    finally:
        pub.kill()
        pub.wait()


def test_hls_playlist_written_by_ffmpeg_pulled_over_http(face_extractor, face_clip, tmp_path):
    hls = tmp_path / "hls"
    hls.mkdir()
    subprocess.run([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-i", str(face_clip), "-c", "copy",
                    "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", "-hls_playlist_type", "vod",
                    str(hls / "index.m3u8")], check=True)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(hls))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.m3u8"
        with MonitorHarness(config({"name": "hls", "url": url}), analyzer(face_extractor)) as h:
            h.wait_for(lambda: (h.value("fvq_windows_analysed_total", stream="hls") or 0) >= 2, 40, "HLS windows")
            assert h.value("fvq_face_presence_ratio", stream="hls") > 0.5
            assert h.streams()["hls"]["resolution"] == [640, 360]
    finally:
        server.shutdown()


def test_srt_pull_through_the_ffmpeg_relay(face_extractor, face_clip):
    port = free_port()
    # ffmpeg publishes as the SRT listener; the monitor calls it (PyAV's FFmpeg lacks SRT: the relay pulls it)
    pub = subprocess.Popen([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                            str(face_clip), "-c", "copy", "-f", "mpegts", f"srt://127.0.0.1:{port}?mode=listener"])
    try:
        time.sleep(0.5)
        with MonitorHarness(config({"name": "srt", "url": f"srt://127.0.0.1:{port}?mode=caller"}),
                            analyzer(face_extractor)) as h:
            h.wait_for(lambda: (h.value("fvq_windows_analysed_total", stream="srt") or 0) >= 2, 40, "SRT windows")
            assert h.value("fvq_face_presence_ratio", stream="srt") > 0.5
            assert h.value("fvq_stream_bitrate_bits_per_second", stream="srt") > 10_000
    finally:
        pub.kill()
        pub.wait()
