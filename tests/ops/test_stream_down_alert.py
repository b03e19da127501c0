"""A real Prometheus with the generated rules scrapes `fvq serve` (front and two workers): kill -9 of the publisher
of an expected key on a many-key RTMP app fires FvqStreamDown within a minute while the stream stays listed
`down`; a key that is not expected ends instead, and the slot it held is free at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, need
from tests.ops.test_prometheus_e2e import Prometheus
from tests.stream.test_workers import Served
from tests.stream.test_workers import small_clip as small_clip  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow  # end to end: workers, many streams or a real Prometheus

def _publish(clip: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                             str(clip), "-c", "copy", "-f", "flv", url], start_new_session=True)


def _state(served: Served, name: str) -> str | None:
    status, body = served.get(f"/streams/{name}")
    return json.loads(body)["state"] if status == 200 else None


def test_kill_9_of_an_expected_publisher_fires_stream_down(tmp_path: Path, small_clip: Path) -> None:  # noqa: F811
    port = free_port()
    base = f"rtmp://127.0.0.1:{port}"
    config = {
        "window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
        "limits": {"max_streams": 2, "ended_retention_s": 120},
        "sources": [{"name": "studio", "url": f"{base}/studio", "listen": True, "expected": True},
                    {"name": "shows", "url": f"{base}/shows", "listen": True}],
    }
    served = Served(tmp_path, config)
    pubs: list[subprocess.Popen] = []
    prom = None
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front to be ready", 120)
        prom = Prometheus(tmp_path, served.port)
        pubs = [_publish(small_clip, f"{base}/studio/cam1"), _publish(small_clip, f"{base}/shows/talk")]
        served.wait(lambda: _state(served, "cam1") == "up" and _state(served, "talk") == "up", "both keys up", 60)
        assert prom is not None
        served.wait(lambda: prom.value('fvq_stream_up{stream="cam1"}') == 1, "Prometheus to see cam1 up", 30)
        # the camera dies: no goodbye
        os.kill(pubs[0].pid, signal.SIGKILL)
        pubs[0].wait()
        killed_at = time.monotonic()
        served.wait(lambda: _state(served, "cam1") == "down", "cam1 to read down", 15)
        served.wait(lambda: prom.alerts("FvqStreamDown") and any(
            a["labels"].get("stream") == "cam1" for a in prom.alerts("FvqStreamDown")), "FvqStreamDown for cam1", 60)
        fired_after = time.monotonic() - killed_at
        print(f"\nFvqStreamDown fired {fired_after:.1f} s after kill -9 (rules: down_for 3s, 1 s scrape/eval)")
        assert fired_after < 60
        assert prom.value('fvq_stream_up{stream="cam1"}') == 0
        assert _state(served, "cam1") == "down"  # still listed: it is expected back
        # a key that is not expected: its publisher leaving ends the stream (still listed) and frees its slot,
        # so another key takes it although max_streams is 2 and cam1 (down, expected) holds the other
        os.kill(pubs[1].pid, signal.SIGKILL)
        pubs[1].wait()
        served.wait(lambda: _state(served, "talk") == "ended", "talk to end", 15)
        pubs.append(_publish(small_clip, f"{base}/shows/next"))
        served.wait(lambda: _state(served, "next") == "up", "a new key in the slot the ended stream freed", 30)
        # now the cap is full (cam1 down but expected, next up): a third key is refused, and the front counts it
        pubs.append(_publish(small_clip, f"{base}/shows/third"))
        served.wait(lambda: [v for n, labels, v in served.samples() if n == "fvq_streams_refused_total"
                             and labels == {"reason": "limit"}] >= [1.0], "the refusal counted by the front", 20)
        pubs[-1].kill()
        pubs[-1].wait()
        # the camera comes back: cam1 is up again and the alert resolves
        pubs.append(_publish(small_clip, f"{base}/studio/cam1"))
        served.wait(lambda: _state(served, "cam1") == "up", "cam1 back up", 30)
        served.wait(lambda: not any(a["labels"].get("stream") == "cam1" for a in prom.alerts("FvqStreamDown")),
                    "FvqStreamDown for cam1 to resolve", 30)
    finally:
        for p in pubs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if prom is not None:
            prom.close()
        served.stop()


WHIP_PUBLISHER = """
import asyncio, sys
import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

async def main(url):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as s, s.post(url, data=pc.localDescription.sdp,
                                                    headers={"Content-Type": "application/sdp"}) as r:
        answer = await r.text()
        assert r.status == 201, answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


def test_kill_9_of_a_whip_peer_fires_stream_down(tmp_path: Path) -> None:
    import sys

    config = {
        "window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
        "server": {"ice_allow_private": True, "whip_idle_timeout_s": 3},
    }
    served = Served(tmp_path, config)
    prom = peer = None
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front to be ready", 120)
        prom = Prometheus(tmp_path, served.port)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        peer = subprocess.Popen([sys.executable, "-c", WHIP_PUBLISHER, served.url + "/whip/peer"], env=env,
                                start_new_session=True)
        served.wait(lambda: _state(served, "peer") == "up", "the WHIP peer up", 60)
        served.wait(lambda: prom.value('fvq_stream_up{stream="peer"}') == 1, "Prometheus to see the peer up", 30)
        os.kill(peer.pid, signal.SIGKILL)  # no DELETE, no goodbye
        peer.wait()
        killed_at = time.monotonic()
        served.wait(lambda: _state(served, "peer") == "down", "the vanished peer to read down (not error)", 30)
        served.wait(lambda: any(a["labels"].get("stream") == "peer" for a in prom.alerts("FvqStreamDown")),
                    "FvqStreamDown for the WHIP peer", 60)
        fired_after = time.monotonic() - killed_at
        print(f"\nFvqStreamDown fired {fired_after:.1f} s after kill -9 of the WHIP peer "
              "(whip_idle_timeout_s 3, down_for 3s)")
        assert fired_after < 60
    finally:
        if peer is not None and peer.poll() is None:
            peer.kill()
            peer.wait()
        if prom is not None:
            prom.close()
        served.stop()
