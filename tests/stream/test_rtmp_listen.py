"""RTMP listen through the monitor's bundled nginx-rtmp, with real ffmpeg publishers on loopback: many keys on one
port, each its own stream; allow-list, tokens and the stream cap; idle TCP clients that never block a publisher;
the port re-armed at once; exclusive binding."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.config import MonitorConfig
from stream.ingest.nginx_rtmp import NginxRtmp, RtmpListenError
from stream.live.analysis import Analyzer
from tests.conftest import free_port, make_face_clip, need
from tests.harness import MonitorHarness

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def face_extractor():
    from engines.face import FaceExtractor

    return FaceExtractor()


@pytest.fixture(scope="module")
def small_flv(tmp_path_factory) -> Path:
    """Small and low-rate, so 20 publishers and their decoding fit on two shared cores."""
    return make_face_clip(tmp_path_factory.mktemp("rtmp") / "small.flv", seconds=8.0, size="320x180", fps=10,
                          codec_args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "10"),
                          extra=("-f", "flv"))


def config(*sources: dict, **extra) -> MonitorConfig:
    return MonitorConfig.model_validate({
        "sources": list(sources),
        "window": {"length_s": 2.0, "hop_s": 1.0},
        "analysis": {"stale_after_s": 2.0, "batch_interval_s": 0.05, "sample_fps": 1.0},
        "no_model": True,
        **extra,
    })


def analyzer(face) -> Analyzer:
    return Analyzer(face, None, embed_every=0, sample_fps=1.0)


def publish(src: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                             str(src), "-c", "copy", "-f", "flv", url], stderr=subprocess.DEVNULL)


def kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def windows(h: MonitorHarness, name: str) -> float:
    return h.value("fvq_windows_analysed_total", stream=name) or 0


def test_twenty_publishers_on_one_port(face_extractor, small_flv):
    port = free_port()
    base = f"rtmp://127.0.0.1:{port}/live"
    keys = [f"cam{i:02d}" for i in range(20)]
    with MonitorHarness(config({"name": "live", "url": base, "listen": True}), analyzer(face_extractor)) as h:
        pubs = []
        try:
            started = time.monotonic()
            pubs = [publish(small_flv, f"{base}/{k}") for k in keys]
            h.wait_for(lambda: all(windows(h, k) >= 1 for k in keys), 90, "a scored window of every publisher")
            print(f"20 publishers on one port: every key scored {time.monotonic() - started:.1f} s after start")
            for k in keys:
                assert h.value("fvq_stream_up", stream=k) == 1, k
                assert h.value("fvq_face_presence_ratio", stream=k) > 0.5, k
            status, body = h.get("/api/v1/streams/live")
            assert status == 200 and b'"listening"' in body
            status, body = h.get(f"/api/v1/streams/{keys[3]}")
            assert status == 200 and b'"origin": "rtmp"' in body
            # one publisher is killed: its key is not expected, so its stream ends (listed, down to 0, its slot
            # free, gone after the retention); the other 19 go on
            before = {k: windows(h, k) for k in keys[1:]}
            frames = {k: v["frames_received"] for k, v in h.streams().items() if k in before}
            pubs[0].kill()
            pubs[0].wait()
            h.wait_for(lambda: h.streams()[keys[0]]["state"] == "ended", 15, "the killed publisher's stream ended")
            assert h.value("fvq_stream_up", stream=keys[0]) == 0

            def others_went_on() -> bool:
                # every other key keeps receiving, and each is scored on: a loaded 2-core host sheds late windows,
                # and the monitor rates the streams rated longest ago first, so the shedding cannot starve one key
                now = h.streams()
                return (all(now[k]["frames_received"] >= frames[k] + 20 for k in before)
                        and all(windows(h, k) >= before[k] + 2 for k in before))

            h.wait_for(others_went_on, 60, "the others received and scored on")
            streams = h.streams()
            assert all(streams[k]["state"] == "up" for k in keys[1:])
            assert h.value("fvq_streams_active") == 19
        finally:
            kill_all(pubs)


def test_allow_list_tokens_and_the_stream_cap(face_extractor, small_flv):
    port = free_port()
    base = f"rtmp://127.0.0.1:{port}/live"
    source = {"name": "live", "url": base, "listen": True, "allow_keys": ["cam-*"],
              "publish_tokens": {"cam-secure": "t0ken"}, "labels": {"site": "studio"}}
    with MonitorHarness(config(source, limits={"max_streams": 2}), analyzer(face_extractor)) as h:
        pubs = []
        try:
            refused = {
                "key": publish(small_flv, f"{base}/other"),
                "token": publish(small_flv, f"{base}/cam-secure?token=wrong"),
            }
            for reason, p in refused.items():
                assert p.wait(20) != 0, f"ffmpeg publishing a {reason}-refused stream was not refused"
                assert h.value("fvq_rtmp_rejected_total", reason=reason) == 1
            pubs.append(publish(small_flv, f"{base}/cam-secure?token=t0ken"))
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="cam-secure") or 0) > 0, 15, "cam-secure")
            pubs.append(publish(small_flv, f"{base}/cam-1"))
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="cam-1") or 0) > 0, 15, "cam-1")
            over = publish(small_flv, f"{base}/cam-2")  # a third stream: over limits.max_streams
            assert over.wait(20) != 0
            assert h.value("fvq_rtmp_rejected_total", reason="limit") == 1
            assert h.value("fvq_streams_refused_total", reason="limit") == 1
            assert set(h.streams()) == {"cam-secure", "cam-1"}
            assert h.value("fvq_stream_info", stream="cam-1", site="studio") == 1  # the listen source's labels
            # the hook server nginx calls answers nobody who does not know its secret path
            import urllib.request

            hook_port = h.monitor.rtmp._hooks.server_address[1]
            for path in ("/publish_done", "/x/publish_done"):
                req = urllib.request.Request(f"http://127.0.0.1:{hook_port}{path}", b"app=live&name=cam-1")
                with pytest.raises(urllib.error.HTTPError, match="404"):
                    urllib.request.urlopen(req, timeout=5)
            assert "cam-1" in h.streams()
        finally:
            kill_all(pubs)


def test_idle_clients_never_block_a_publisher_and_the_port_is_exclusive(face_extractor, small_flv):
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/cam"
    cfg = config({"name": "cam", "url": url, "listen": True}, rtmp={"handshake_timeout_s": 2})
    with MonitorHarness(cfg, analyzer(face_extractor)) as h:
        idle = []
        pubs = []
        try:
            # 100 clients that connect and stall: 50 send nothing, 50 only C0+C1 of the handshake
            for i in range(100):
                s = socket.create_connection(("127.0.0.1", port), 5)
                if i % 2:
                    s.sendall(b"\x03" + os.urandom(1536))
                idle.append(s)
            started = time.monotonic()
            pubs.append(publish(small_flv, url))
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="cam") or 0) > 0, 5.0,
                       "the publisher's frames despite 100 idle clients")
            print(f"first frame {time.monotonic() - started:.2f} s after the publisher started, 100 idle clients held")
            # the idle clients are closed after the handshake timeout
            deadline = time.monotonic() + 2 + 5
            for s in idle:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    while s.recv(65536):  # S0+S1+S2 may come first for the C0+C1 clients
                        pass
                except ConnectionResetError:
                    pass  # closed too
                except TimeoutError:
                    pytest.fail("an idle client was not closed after the handshake timeout")
            h.wait_for(lambda: h.value("fvq_rtmp_rejected_total", reason="handshake_timeout") >= 100, 5,
                       "the idle clients counted")
            assert h.value("fvq_rtmp_rejected_total", reason="handshake_timeout") <= 101  # + the start-up probe
            # the publisher leaves and another comes at once: the port takes it straight away
            pubs[0].kill()
            pubs[0].wait()
            before = h.value("fvq_frames_received_total", stream="cam")
            started = time.monotonic()
            pubs.append(publish(small_flv, url))
            h.wait_for(lambda: h.value("fvq_frames_received_total", stream="cam") > before + 10, 10, "second publisher")
            print(f"second publisher's frames {time.monotonic() - started:.2f} s after it started")

            # exclusive binding: another server on the port is refused with a clear error
            other = NginxRtmp("127.0.0.1", port, "http://127.0.0.1:9/", cfg.rtmp)
            other.apps.add("live")
            with pytest.raises(RtmpListenError, match=f"port {port} .*in use"):
                other.start()
            other.stop()
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
            cli = subprocess.run(
                [sys.executable, "-m", "fvq", "serve", "--workers", "1", "--no-model", "--port", str(free_port()),
                 "--listen", f"cam={url}"], env=env, capture_output=True, text=True, timeout=60,
            )
            assert cli.returncode == 2 and f"RTMP port {port}" in cli.stderr and "in use" in cli.stderr, cli.stderr
            assert "Traceback" not in cli.stderr
            assert h.value("fvq_stream_up", stream="cam") == 1  # the running monitor is undisturbed
        finally:
            for s in idle:
                s.close()
            kill_all(pubs)


def test_an_app_added_and_removed_through_the_api_on_a_running_port(face_extractor, small_flv):
    import json
    import urllib.request

    port = free_port()
    cam_url = f"rtmp://127.0.0.1:{port}/live/cam"
    with MonitorHarness(config({"name": "cam", "url": cam_url, "listen": True}), analyzer(face_extractor)) as h:
        pubs = [publish(small_flv, cam_url)]
        try:
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="cam") or 0) > 0, 10, "cam")

            def api(method: str, path: str, body: dict | None = None) -> int:
                req = urllib.request.Request(h.url + path, None if body is None else json.dumps(body).encode(),
                                             {"Content-Type": "application/json"}, method=method)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        return r.status
                except urllib.error.HTTPError as e:
                    return e.code

            assert api("POST", "/api/v1/streams",
                       {"name": "obs", "url": f"rtmp://127.0.0.1:{port}/obs", "listen": True}) == 201
            assert api("POST", "/api/v1/streams",  # the app is taken
                       {"name": "obs2", "url": f"rtmp://127.0.0.1:{port}/obs", "listen": True}) == 409
            pubs.append(publish(small_flv, f"rtmp://127.0.0.1:{port}/obs/k1"))
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="k1") or 0) > 0, 10, "k1 on app obs")
            before = h.value("fvq_frames_received_total", stream="cam")
            h.wait_for(lambda: h.value("fvq_frames_received_total", stream="cam") > before + 10, 10,
                       "cam going on after nginx took the new app")
            assert api("DELETE", "/api/v1/streams/obs") == 204  # the app and its publishers' streams go
            h.wait_for(lambda: "k1" not in h.streams(), 5, "k1 removed with its app")
            assert api("GET", "/api/v1/streams/obs") == 404
            before = h.value("fvq_frames_received_total", stream="cam")
            h.wait_for(lambda: h.value("fvq_frames_received_total", stream="cam") > before + 10, 10, "cam still")
        finally:
            kill_all(pubs)


def test_nginx_killed_is_started_again_and_its_publishers_streams_leave(face_extractor, small_flv):
    port = free_port()
    base = f"rtmp://127.0.0.1:{port}/live"
    with MonitorHarness(config({"name": "live", "url": base, "listen": True}), analyzer(face_extractor)) as h:
        pubs = [publish(small_flv, f"{base}/k1")]
        try:
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="k1") or 0) > 0, 10, "k1")
            server = next(iter(h.monitor.rtmp.servers.values()))
            first = server.proc.pid
            server.proc.kill()  # the master; its worker follows
            h.wait_for(lambda: server.alive and server.proc.pid != first, 10, "nginx started again")
            h.wait_for(lambda: h.streams()["k1"]["state"] == "ended", 5, "the orphaned stream ended")
            pubs[0].kill()
            pubs[0].wait()
            pubs.append(publish(small_flv, f"{base}/k2"))
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="k2") or 0) > 0, 10, "k2 after restart")
        finally:
            kill_all(pubs)


def test_a_key_whose_publisher_stalls_and_is_dropped_stays_down(face_extractor, small_flv):
    """A publisher that hangs (SIGSTOP: no packet, no goodbye) reads `down`; when nginx then drops it for idleness
    the stream stays `down` (end reason `stalled`), listed and at fvq_stream_up 0, so FvqStreamDown can fire for a
    key nobody declared expected; a publisher that comes back on the key scores again."""
    import signal

    port = free_port()
    base = f"rtmp://127.0.0.1:{port}/live"
    with MonitorHarness(config({"name": "live", "url": base, "listen": True}, rtmp={"idle_publisher_s": 3},
                               limits={"ended_retention_s": 120}), analyzer(face_extractor)) as h:
        pubs = [publish(small_flv, f"{base}/cam")]
        try:
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="cam") or 0) > 0, 15, "cam publishing")
            os.kill(pubs[0].pid, signal.SIGSTOP)
            h.wait_for(lambda: h.streams()["cam"]["state"] == "down", 10, "the stalled key down")
            # nginx drops the silent publisher after 3 s and calls on_publish_done: the stream stays down
            h.wait_for(lambda: h.streams()["cam"].get("end_reason") == "stalled", 15, "the publisher dropped")
            time.sleep(1.0)
            assert h.streams()["cam"]["state"] == "down"
            assert h.value("fvq_stream_up", stream="cam") == 0
            os.kill(pubs[0].pid, signal.SIGCONT)
            kill_all(pubs)
            pubs = [publish(small_flv, f"{base}/cam")]
            h.wait_for(lambda: h.streams()["cam"]["state"] == "up", 15, "the key back up")
        finally:
            for p in pubs:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
            kill_all(pubs)
