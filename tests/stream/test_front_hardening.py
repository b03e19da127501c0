"""The front of `fvq serve --workers 2` as hard as one process (issue 13's limits, reused): hostile connections
closed and counted while /metrics and /healthz answer, a port in use named, WHIP default-deny and the per-client
cap from the real client address (a worker believes the forwarded address only with the front's token), secrets
out of /streams, the API and the log, ended streams' series gone after the retention. Real workers, loopback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
import psutil
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from tests.conftest import make_face_clip
from tests.stream.test_hostile import closed_by_server, connect
from tests.stream.test_whip import FaceTrack
from tests.stream.test_workers import ROOT, Served, assert_each_series_once
from tests.stream.test_workers import small_clip as small_clip  # noqa: F401 - the fixture

SDP = {"Content-Type": "application/sdp"}
SECRET_URL = "rtsp://alice:hunter2pw@127.0.0.1:1/live/cam?token=tok3nvalue"


def outward_address() -> str:
    """This host's non-loopback IPv4 address (no packet is sent), as tests/stream/test_lifecycle.py finds it."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        address = probe.getsockname()[0]
    except OSError:
        pytest.skip("this host has no non-loopback IPv4 address")
    finally:
        probe.close()
    if address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    return address


def worker_token(served: Served) -> str:
    pid = next(iter(served.worker_pids().values()))
    return psutil.Process(pid).environ()["FVQ_WORKER_TOKEN"]


def timed(served: Served, path: str) -> float:
    t0 = time.monotonic()
    status, body = served.get(path)
    assert status == 200, body
    return time.monotonic() - t0


def test_front_limits_port_secrets_and_log(tmp_path: Path, small_clip: Path) -> None:  # noqa: F811
    config = {"window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
              "server": {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "max_connections_per_client": 40,
                         "keepalive_max_requests": 2},
              "sources": [{"name": "clip", "url": str(small_clip), "loop": True},
                          {"name": "secret", "url": SECRET_URL}]}
    served = Served(tmp_path, config)
    try:
        served.wait(lambda: served.get("/healthz")[0] in (200,), "the front", 120)
        served.wait(lambda: any(n == "fvq_windows_analysed_total" and lb.get("stream") == "clip" and v > 0
                                for n, lb, v in served.samples()), "windows of the file stream", 60)

        # a second front on the same port: exit 2 naming the port, before any worker starts
        t0 = time.monotonic()
        other = subprocess.run(
            [sys.executable, "-m", "fvq", "serve", "--config", str(tmp_path / "fvq.yaml"), "--port",
             str(served.port)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=60)
        assert other.returncode == 2, other.stderr
        assert f":{served.port}" in other.stderr and "in use" in other.stderr, other.stderr
        assert "Traceback" not in other.stderr
        assert time.monotonic() - t0 < 30

        # hostile connections from 127.0.0.2 while Prometheus (127.0.0.1) scrapes
        idle = [connect(served.port) for _ in range(10)]
        slow_headers = [connect(served.port) for _ in range(20)]
        for s in slow_headers:
            s.sendall(b"GET /streams HTTP/1.1\r\n")
        slow_bodies = [connect(served.port) for _ in range(10)]
        for s in slow_bodies:
            s.sendall(b"POST /whip/cam HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n4\r\nv=0\n\r\n")
        over = [connect(served.port) for _ in range(25)]  # past the per-client cap: 503 with the reason
        for s in over:
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"max_connections_per_client" in answer, answer
        latencies = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for s in slow_headers:
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            latencies += [timed(served, "/metrics"), timed(served, "/healthz")]
            time.sleep(0.2)
        print(f"front /metrics and /healthz under 65 hostile connections: max {max(latencies):.3f} s "
              f"over {len(latencies)} requests")
        assert max(latencies) < 2.0, latencies
        for s in idle + slow_headers:
            assert closed_by_server(s) is not None, "a slow or idle connection to the front is open after 3 s"
        for s in slow_bodies:
            answer = closed_by_server(s)
            assert answer is not None and (answer == b"" or answer.startswith(b"HTTP/1.1 408")), answer
        for s in idle + slow_headers + slow_bodies + over:
            s.close()
        s = connect(served.port)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        answer = s.recv(4096)
        s.close()
        assert b" 431 " in answer.split(b"\r\n")[0] and b"max_header_bytes" in answer, answer

        samples = served.samples()
        assert_each_series_once(samples)
        rejected = {lb["reason"]: v for n, lb, v in samples if n == "fvq_http_rejected_total"}
        assert {k: rejected[k] for k in ("client_connections", "header_timeout", "body_timeout",
                                         "header_too_large")} == {"client_connections": 25, "header_timeout": 30,
                                                                  "body_timeout": 10, "header_too_large": 1}
        assert not [lb for n, lb, _ in samples if n == "fvq_http_rejected_total" and "worker" in lb]
        # streams live now, summed over the workers: one series
        active = [(lb, v) for n, lb, v in samples if n == "fvq_streams_active"]
        assert active == [({}, 2.0)], active

        # secrets: not in /streams, the API, nor the log (front and workers)
        for path in ("/streams", "/api/v1/streams", "/streams/secret", "/api/v1/streams/secret"):
            status, raw = served.get(path)
            assert status == 200, (path, raw)
            assert b"hunter2pw" not in raw and b"tok3nvalue" not in raw, (path, raw)
        assert any(s["name"] == "secret" and "***" in s["url"] for s in json.loads(served.get("/streams")[1])
                   ["streams"])
    finally:
        served.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "secret" in log  # the stream's reconnects were logged...
    assert "hunter2pw" not in log and "tok3nvalue" not in log  # ...redacted
    assert "Traceback" not in log


def test_whip_default_deny_through_the_front_uses_the_real_client(tmp_path: Path) -> None:
    address = outward_address()
    config = {"window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
              "server": {"host": address, "cors_origins": ["https://ok.example"]}}
    served = Served(tmp_path, config)
    url = f"http://{address}:{served.port}"
    served.wait(lambda: served.proc.poll() is None and _get(url + "/healthz") == 200, "the front", 120)

    async def body() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        await pc.close()
        async with aiohttp.ClientSession() as http:
            # a client off loopback, no token: refused by the front, nothing placed
            for extra in ({}, {"X-Fvq-Client": "127.0.0.1"}, {"X-Fvq-Client": "127.0.0.1",
                                                                "X-Fvq-Worker-Token": "guess"}):
                async with http.post(f"{url}/whip/cam", data=offer, headers={**SDP, **extra}) as r:
                    text = await r.text()
                    assert r.status == 403 and "allow_anonymous_ingest" in text, (extra, r.status, text)
            async with http.get(f"{url}/streams") as r:
                assert (await r.json())["streams"] == []
            # CORS: only an allowed origin gets the headers, on the front's own OPTIONS too
            async with http.options(f"{url}/whip/cam", headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 204 and "Access-Control-Allow-Origin" not in r.headers
            async with http.options(f"{url}/whip/cam", headers={"Origin": "https://ok.example"}) as r:
                assert r.headers.get("Access-Control-Allow-Origin") == "https://ok.example"
            # a worker believes a forwarded client address only next to the front's token
            token = worker_token(served)
            workers = json.loads(served_get(url + "/sd"))
            worker = "http://" + workers[0]["targets"][0]
            forwarded = {**SDP, "X-Fvq-Client": "192.0.2.7"}
            async with http.post(f"{worker}/whip/cam", data=offer,
                                 headers={**forwarded, "X-Fvq-Worker-Token": token}) as r:
                assert r.status == 403, await r.text()  # the address the front saw: off loopback
            async with http.post(f"{worker}/whip/cam", data="v=0\r\n",
                                 headers={**forwarded, "X-Fvq-Worker-Token": "wrong"}) as r:
                assert r.status == 400, await r.text()  # header ignored: a loopback client, on to the SDP check

    try:
        asyncio.run(body())
    finally:
        served.stop()


def _get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def served_get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def test_whip_per_client_cap_token_and_retention_through_the_front(tmp_path: Path, media_dir: Path) -> None:
    clip = make_face_clip(media_dir / "whip_small.mp4", seconds=2.0, size="320x240")
    with av.open(str(clip)) as c:
        frames: list[np.ndarray] = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    config = {"window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True, "workers": 2, "worker_spares": 0,
              "limits": {"ended_retention_s": 1.0},
              "server": {"whip_token": "sekret", "whip_max_sessions_per_client": 2, "ice_allow_private": True}}
    served = Served(tmp_path, config)
    auth = {**SDP, "Authorization": "Bearer sekret"}

    async def publish(http: aiohttp.ClientSession, name: str):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        track = FaceTrack(frames)
        pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{served.url}/whip/{name}", data=pc.localDescription.sdp, headers=auth) as r:
            text, status, location = await r.text(), r.status, r.headers.get("Location")
        if status != 201:
            track.stop()
            await pc.close()
            return status, text, None
        await pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
        return status, location, (pc, track)

    def wait(predicate, what: str, timeout: float):
        return asyncio.get_running_loop().run_in_executor(None, lambda: served.wait(predicate, what, timeout))

    def stream_series(samples) -> set[tuple[str, str]]:
        return {(n, lb["stream"]) for n, lb, _ in samples if lb.get("stream") in ("cam0", "cam1")}

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            held = []
            for name in ("cam0", "cam1"):
                status, location, peer = await publish(http, name)
                assert status == 201, location
                held.append((location, peer))
            status, text, _ = await publish(http, "cam2")  # the third from this address: refused at the front
            assert status == 429 and "whip_max_sessions_per_client" in text, (status, text)
            placed = {s["name"]: s["worker"] for s in json.loads(served.get("/streams")[1])["streams"]}
            assert set(placed) == {"cam0", "cam1"} and set(placed.values()) == {"w0", "w1"}, placed
            await wait(lambda: all(any(n == "fvq_windows_analysed_total" and lb.get("stream") == c and v > 0
                                       for n, lb, v in served.samples()) for c in ("cam0", "cam1")),
                       "windows of both WHIP streams", 40)
            samples = served.samples()
            assert_each_series_once(samples)
            assert [v for n, lb, v in samples if n == "fvq_streams_active"] == [2.0]
            assert {lb["stream"] for n, lb, _ in samples if n == "fvq_stream_worker"} == {"cam0", "cam1"}
            for location, (pc, track) in held:
                async with http.delete(served.url + location, headers={"Authorization": "Bearer sekret"}) as r:
                    assert r.status == 200
                track.stop()
                await pc.close()
            await wait(lambda: not stream_series(served.samples()), "the ended streams' series to leave", 20)
            samples = served.samples()
            assert [v for n, lb, v in samples if n == "fvq_streams_active"] == [0.0]
            assert json.loads(served.get("/streams")[1])["streams"] == []
            status, location, peer = await publish(http, "cam3")  # slots freed: publishes again
            assert status == 201, location
            peer[1].stop()
            await peer[0].close()

    served.wait(lambda: served.get("/healthz")[0] == 200, "the front", 120)
    try:
        asyncio.run(body())
    finally:
        served.stop()


def test_too_many_sources_fails_at_start_in_front_mode(tmp_path: Path, small_clip: Path) -> None:  # noqa: F811
    config = {"no_model": True, "workers": 2, "limits": {"max_streams": 2},
              "sources": [{"name": f"s{i}", "url": str(small_clip)} for i in range(3)]}
    served = Served(tmp_path, config)
    try:
        rc = served.proc.wait(60)
    finally:
        served.stop()
    log = (tmp_path / "serve.log").read_text()
    assert rc == 2, log
    assert "3" in log and "max_streams is 2" in log and "Traceback" not in log, log
