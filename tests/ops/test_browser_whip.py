"""A real browser publishes over WHIP: headless Chromium with a fake camera playing a talking head opens a page
served by the test, which calls getUserMedia and posts its offer to the monitor's /whip/{stream}; the monitor
scores that stream."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from tests.conftest import CARPHONE, need
from tests.harness import MonitorHarness

pytestmark = pytest.mark.slow

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>WHIP publisher</title>
<pre id="log"></pre>
<script>
const report = (event, detail) => {
  document.getElementById("log").textContent += event + " " + (detail || "") + "\\n";
  fetch("/status", {method: "POST", body: JSON.stringify({event, detail: String(detail || "")})});
};
async function publish() {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 360}, audio: false});
  report("camera", media.getVideoTracks()[0].label);
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver(media.getVideoTracks()[0], {direction: "sendonly"});
  pc.onconnectionstatechange = () => report("connection", pc.connectionState);
  await pc.setLocalDescription(await pc.createOffer());
  // WHIP without trickle ICE: every candidate in the one offer
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const response = await fetch(WHIP_URL, {
    method: "POST", headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp,
  });
  if (response.status !== 201) throw new Error("WHIP answered " + response.status + ": " + await response.text());
  report("location", response.headers.get("Location"));
  await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
}
publish().catch(err => report("error", err));
</script>
"""


class PageServer:
    """Serves the publisher page on 127.0.0.1 and records what it reports."""

    def __init__(self, page: str) -> None:
        self.events: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                outer.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def camera_y4m(media_dir) -> Path:
    """What the fake camera plays: the talking head at 640x360, 4 s, as raw y4m (Chromium loops it)."""
    out = media_dir / "camera.y4m"
    subprocess.run([need("ffmpeg"), "-nostdin", "-y", "-loglevel", "error", "-i", str(CARPHONE), "-t", "4",
                    "-vf", "scale=640:360:flags=bicubic,fps=25", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def test_chromium_publishes_over_whip_and_the_monitor_scores_it(camera_y4m, tmp_path):
    from engines.face import FaceExtractor

    # the page is on another origin (its own port), and Chromium's host candidates are loopback/private addresses
    cfg = MonitorConfig.model_validate({"window": {"length_s": 2.0, "hop_s": 1.0}, "no_model": True,
                                        "server": {"cors_origins": ["*"], "ice_allow_private": True}})
    with MonitorHarness(cfg, Analyzer(FaceExtractor(), None, embed_every=0, sample_fps=2.0)) as h:
        page = PageServer(PAGE.replace("WHIP_URL", json.dumps(f"{h.url}/whip/browser")))
        browser = subprocess.Popen([
            need("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_y4m}", "--allow-loopback-in-peer-connection",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--no-default-browser-check", "--mute-audio", f"--user-data-dir={tmp_path / 'profile'}",
            "--remote-debugging-port=0", page.url,
        ], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "wb"))  # noqa: SIM115
        try:
            def scored() -> bool:
                errors = [e for e in page.events if e["event"] == "error"]
                assert not errors, f"the page failed: {errors}"
                assert browser.poll() is None, (tmp_path / "chromium.log").read_text()[-3000:]
                return (h.value("fvq_windows_analysed_total", stream="browser") or 0) >= 3

            h.wait_for(scored, 60, "windows of the browser's stream")
            assert h.value("fvq_face_presence_ratio", stream="browser") > 0
            assert h.value("fvq_stream_up", stream="browser") == 1
            info = h.streams()["browser"]
            assert info["kind"] == "whip" and info["state"] == "up"
            assert info["latest"]["dimensions"]["face"]
            events = [e["event"] for e in page.events]
            assert "camera" in events and "location" in events
            assert {"event": "connection", "detail": "connected"} in page.events
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
            page.close()
