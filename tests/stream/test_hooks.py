"""Media-server hooks with the real server: nginx-rtmp (libnginx-mod-rtmp) notifies the monitor of publishes by
ffmpeg, the monitor pulls each key while it is live; SRS's documented payload (no SRS package reaches this
machine, so that test posts what SRS sends, from its docs)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.conftest import free_port, make_face_clip, need
from tests.harness import MonitorHarness

pytestmark = pytest.mark.slow

MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


@pytest.fixture(scope="module")
def face_extractor():
    from engines.face import FaceExtractor

    return FaceExtractor()


@pytest.fixture(scope="module")
def small_flv(tmp_path_factory) -> Path:
    """A small, low-rate talking head, so several publishers and their pulls fit on two shared cores."""
    return make_face_clip(tmp_path_factory.mktemp("hooks") / "small.flv", seconds=8.0, size="320x180", fps=10,
                          codec_args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "10"),
                          extra=("-f", "flv"))


def start_nginx(tmp_path: Path, port: int, app_block: str) -> subprocess.Popen:
    need("nginx")
    need("curl")
    if not MODULE.exists():
        pytest.fail("libnginx-mod-rtmp is not installed: run `make setup`")
    (tmp_path / "logs").mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
load_module {MODULE};
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/logs/error.log info;
events {{ worker_connections 128; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; {app_block} }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "logs/error.log")])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("nginx-rtmp did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def publish(src: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                             str(src), "-c", "copy", "-f", "flv", url])


def exec_hooks(monitor_port: int) -> str:
    """The wiring docs/operations.md shows: exec_publish runs curl and never waits for it, so nginx takes the
    publisher whatever the monitor answers, or if it is not running at all."""
    base = f"http://127.0.0.1:{monitor_port}/hooks/nginx"
    curl = "/usr/bin/curl -s -m 2 -o /dev/null --data-urlencode app=$app --data-urlencode name=$name " \
           "--data-urlencode addr=$addr"
    return f"exec_publish {curl} {base}/on_publish; exec_publish_done {curl} {base}/on_publish_done;"


def notify_hooks(monitor_port: int) -> str:
    """nginx-rtmp's own form-encoded notifications (on_publish waits for the answer: always 200 from the monitor)."""
    base = f"http://127.0.0.1:{monitor_port}/hooks/nginx"
    return f"on_publish {base}/on_publish; on_publish_done {base}/on_publish_done;"


def config(nginx_port: int, **extra) -> MonitorConfig:
    return MonitorConfig.model_validate({
        "window": {"length_s": 2.0, "hop_s": 1.0},
        "analysis": {"stale_after_s": 2.0, "batch_interval_s": 0.05, "sample_fps": 1.0},
        "no_model": True,
        "hooks": {"pull_url": f"rtmp://127.0.0.1:{nginx_port}/{{app}}/{{name}}", "stream_name": "{app}-{name}",
                  "labels": {"channel": "{name}", "origin_app": "{app}"}},
        **extra,
    })


@pytest.mark.parametrize("wiring", [exec_hooks, notify_hooks], ids=["exec_publish", "on_publish"])
def test_nginx_hooks_follow_three_publishers(face_extractor, small_flv, tmp_path, wiring):
    nginx_port = free_port()
    with MonitorHarness(config(nginx_port), Analyzer(face_extractor, None, embed_every=0, sample_fps=1.0)) as h:
        nginx = start_nginx(tmp_path, nginx_port, wiring(h.port))
        pubs = []
        try:
            keys = ["cam1", "cam2", "cam3"]
            started = time.monotonic()
            pubs = [publish(small_flv, f"rtmp://127.0.0.1:{nginx_port}/live/{k}") for k in keys]

            def all_pulled() -> bool:
                return all((h.value("fvq_frames_received_total", stream=f"live-{k}") or 0) > 0 for k in keys)

            h.wait_for(all_pulled, 5.0, "the monitor pulling all three keys")
            pulled_s = time.monotonic() - started
            print(f"three keys pulled {pulled_s:.2f} s after their publishers started")
            for k in keys:  # the template's labels, on the info metric
                assert h.value("fvq_stream_info", stream=f"live-{k}", channel=k, origin_app="live") == 1
            h.wait_for(lambda: all((h.value("fvq_windows_analysed_total", stream=f"live-{k}") or 0) >= 1
                                   for k in keys), 30, "a window of each key")
            assert h.value("fvq_hook_events_total", server="nginx", event="publish", result="added") == 3
            # one publisher ends: only its stream leaves, within 5 s
            pubs[0].terminate()
            pubs[0].wait()
            ended = time.monotonic()
            h.wait_for(lambda: "live-cam1" not in h.streams(), 5.0, "cam1 dropped after its publisher ended")
            print(f"cam1 dropped {time.monotonic() - ended:.2f} s after its publisher ended")
            assert h.value("fvq_stream_up", stream="live-cam1") is None  # its series are gone
            assert h.value("fvq_stream_info", stream="live-cam1", channel="cam1", origin_app="live") is None
            assert {"live-cam2", "live-cam3"} <= set(h.streams())
            for p in pubs[1:]:
                p.terminate()
                p.wait()
            ended = time.monotonic()
            h.wait_for(lambda: not set(h.streams()) & {"live-cam2", "live-cam3"}, 5.0, "all dropped")
            print(f"cam2, cam3 dropped {time.monotonic() - ended:.2f} s after their publishers ended")
        finally:
            for p in pubs:
                p.kill()
                p.wait()
            stop(nginx)


def test_hook_to_a_stopped_monitor_does_not_stop_the_publish(small_flv, tmp_path):
    nginx_port, dead = free_port(), free_port()  # nothing listens on `dead`: the monitor is stopped
    nginx = start_nginx(tmp_path, nginx_port, exec_hooks(dead))
    pub = publish(small_flv, f"rtmp://127.0.0.1:{nginx_port}/live/key")
    try:
        time.sleep(1.5)
        assert pub.poll() is None, "nginx refused the publisher"
        # the stream is there to play: nginx took it
        probe = subprocess.run([need("ffprobe"), "-v", "error", "-rw_timeout", "5000000", "-show_entries",
                                "stream=width,height", "-of", "json", f"rtmp://127.0.0.1:{nginx_port}/live/key"],
                               capture_output=True, text=True, timeout=20)
        assert json.loads(probe.stdout)["streams"][0]["width"] == 320, probe.stderr
    finally:
        pub.kill()
        pub.wait()
        stop(nginx)


def post(url: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, body, {"Content-Type": content_type, **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_srs_hooks_with_the_documented_payload(face_extractor, small_flv, tmp_path):
    """SRS itself is not available here: nginx-rtmp serves the stream, and the test posts the JSON SRS documents
    for http_hooks on_publish/on_unpublish (https://ossrs.io/lts/en-us/docs/v5/doc/http-callback)."""
    nginx_port = free_port()
    nginx = start_nginx(tmp_path, nginx_port, "")
    pub = publish(small_flv, f"rtmp://127.0.0.1:{nginx_port}/live/livestream")
    cfg = config(nginx_port)
    cfg.server.api_token = "hook-secret"
    try:
        with MonitorHarness(cfg, Analyzer(face_extractor, None, embed_every=0, sample_fps=1.0)) as h:
            payload = {
                "server_id": "vid-0xk989d", "service_id": "f8f4e2s6", "action": "on_publish",
                "client_id": "341w361a", "ip": "127.0.0.1", "vhost": "__defaultVhost__", "app": "live",
                "tcUrl": f"rtmp://127.0.0.1:{nginx_port}/live", "stream": "livestream", "param": "",
                "stream_url": "/live/livestream", "stream_id": "vid-124q9y3",
            }
            url = f"{h.url}/hooks/srs/on_publish"
            # a wrong token: still {"code": 0} (SRS would refuse the publisher otherwise), but nothing is followed
            status, body = post(url + "?token=nope", json.dumps(payload).encode(), "application/json")
            assert status == 200 and json.loads(body) == {"code": 0}
            assert h.value("fvq_hook_events_total", server="srs", event="publish", result="unauthorized") == 1
            assert "live-livestream" not in h.streams()
            status, body = post(url + "?token=hook-secret", json.dumps(payload).encode(), "application/json")
            assert status == 200 and json.loads(body) == {"code": 0}
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="live-livestream") or 0) > 0, 10,
                       "the stream SRS announced pulled")
            unpublish = {**payload, "action": "on_unpublish"}
            status, body = post(f"{h.url}/hooks/srs/on_unpublish", json.dumps(unpublish).encode(),
                                "application/json", {"Authorization": "Bearer hook-secret"})
            assert status == 200 and json.loads(body) == {"code": 0}
            h.wait_for(lambda: "live-livestream" not in h.streams(), 5, "the stream dropped on on_unpublish")
            # garbage is answered too, and counted as an error, never a 5xx
            status, body = post(url + "?token=hook-secret", b"{not json", "application/json")
            assert status == 200 and json.loads(body) == {"code": 0}
            assert h.value("fvq_hook_events_total", server="srs", event="publish", result="error") == 1
            assert set(h.streams()) == set()
    finally:
        pub.kill()
        pub.wait()
        stop(nginx)


NMS_APP = Path(__file__).resolve().parents[2] / "build" / "node" / "node_modules" / "node-media-server" / "bin" / "app.js"


def test_node_media_server_notify_follows_a_publisher(face_extractor, small_flv, tmp_path):
    """node-media-server v4 posts every event to its `notify.url` without waiting, and closes the session on any
    answer but 200: the monitor answers 200 and follows postPublish/donePublish."""
    need("node")
    if not NMS_APP.exists():
        pytest.fail("node-media-server is not installed: run `make setup` (it installs it with npm into build/node)")
    rtmp_port, http_port = free_port(), free_port()
    with MonitorHarness(config(rtmp_port), Analyzer(face_extractor, None, embed_every=0, sample_fps=1.0)) as h:
        conf = tmp_path / "nms.json"
        conf.write_text(json.dumps({
            "bind": "127.0.0.1", "notify": {"url": f"{h.url}/hooks/nms"}, "store": {"path": str(tmp_path / "data")},
            "rtmp": {"port": rtmp_port}, "http": {"port": http_port}, "webadmin": {"enable": False},
        }))
        nms = subprocess.Popen(["node", str(NMS_APP), "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        pub = None
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", rtmp_port), 0.2).close()
                    break
                except OSError:
                    assert nms.poll() is None and time.monotonic() < deadline, "node-media-server did not start"
                    time.sleep(0.1)
            pub = publish(small_flv, f"rtmp://127.0.0.1:{rtmp_port}/live/nmscam")
            h.wait_for(lambda: (h.value("fvq_frames_received_total", stream="live-nmscam") or 0) > 0, 5,
                       "the stream node-media-server announced pulled")
            assert h.value("fvq_stream_info", stream="live-nmscam", channel="nmscam", origin_app="live") == 1
            time.sleep(1.0)
            assert pub.poll() is None, "node-media-server closed the publisher"
            pub.terminate()
            pub.wait()
            ended = time.monotonic()
            h.wait_for(lambda: h.value("fvq_stream_up", stream="live-nmscam") == 0, 5, "the stream down")
            # node-media-server 4.4 keeps a publish for a 30 s grace window (a publisher may resume) before it
            # sends donePublish; the stream is down meanwhile, and leaves when the notification comes
            h.wait_for(lambda: "live-nmscam" not in h.streams(), 40, "the stream dropped on donePublish")
            print(f"node-media-server: stream dropped {time.monotonic() - ended:.1f} s after its publisher ended")
            assert h.value("fvq_hook_events_total", server="nms", event="unpublish", result="removed") == 1
        finally:
            if pub is not None:
                pub.kill()
                pub.wait()
            stop(nms)
