"""WHIP ingest: a real aiortc peer publishes a talking head to the real monitor server; bad requests fail."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from prometheus_client.parser import text_string_to_metric_families

from stream.config import MonitorConfig
from stream.ingest.whip import VideoIngest, accepted_video_codec, check_offer
from stream.live.analysis import Analyzer
from stream.ops.metrics import build_metrics
from tests.conftest import make_face_clip
from tests.harness import MonitorHarness

SDP = {"Content-Type": "application/sdp"}
HAS_SIGNALS = importlib.util.find_spec("engines.signals") is not None


@pytest.fixture(scope="module")
def face_frames(media_dir: Path) -> list[np.ndarray]:
    """3 s of the talking head at 320x240, decoded once to yuv420p: light enough to encode in real time."""
    clip = make_face_clip(media_dir / "whip_face.mp4", seconds=3.0, size="320x240")
    with av.open(str(clip)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


class FaceTrack(VideoStreamTrack):
    """The publisher's camera: the clip's frames, looped, on a steady 30 fps clock with monotonic timestamps
    (aiortc's MediaPlayer restarts timestamps when it loops a file, which stalls its own sender)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__()
        self.frames = frames
        self.index = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.frames[self.index % len(self.frames)], format="yuv420p")
        self.index += 1
        frame.pts, frame.time_base = pts, time_base
        return frame


def monitor_config(**server) -> MonitorConfig:
    server.setdefault("ice_allow_private", True)  # the publishers' host candidates are private addresses here
    return MonitorConfig.model_validate(
        {
            "window": {"length_s": 1.0, "hop_s": 0.5},
            "no_model": True,
            "server": server,
            "limits": {"max_streams": server.pop("max_streams", 8),
                       **({"ended_retention_s": server.pop("ended_retention_s")} if "ended_retention_s" in server
                          else {})},
        }
    )


def harness(**server) -> MonitorHarness:
    return MonitorHarness(monitor_config(**server), Analyzer(face=None, rater=None))


@dataclass
class Publisher:
    pc: RTCPeerConnection
    track: FaceTrack
    location: str

    async def close(self) -> None:
        self.track.stop()
        await self.pc.close()


class Client:
    """The publisher side, in the test's own event loop (the server runs in the harness's thread)."""

    def __init__(self, h: MonitorHarness, http: aiohttp.ClientSession) -> None:
        self.h = h
        self.http = http

    async def offer(
        self, frames: list[np.ndarray], audio: bool = False
    ) -> tuple[RTCPeerConnection, FaceTrack]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        track = FaceTrack(frames)
        pc.addTransceiver(track, direction="sendonly")
        if audio:
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")  # silence
        await pc.setLocalDescription(await pc.createOffer())
        return pc, track

    async def publish(self, name: str, frames: list[np.ndarray], token: str | None = None) -> Publisher:
        pc, track = await self.offer(frames)
        headers = {**SDP, **({"Authorization": f"Bearer {token}"} if token else {})}
        async with self.http.post(
            f"{self.h.url}/whip/{name}", data=pc.localDescription.sdp, headers=headers
        ) as r:
            answer = await r.text()
            assert r.status == 201, answer
            assert r.headers["Content-Type"].startswith("application/sdp")
            assert "Access-Control-Allow-Origin" not in r.headers  # no CORS unless server.cors_origins
            location = r.headers["Location"]
        assert location.startswith(f"/whip/{name}/")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return Publisher(pc, track, location)

    async def request(self, method: str, path: str, **kw) -> tuple[int, str, dict]:
        async with self.http.request(method, self.h.url + path, **kw) as r:
            return r.status, await r.text(), dict(r.headers)

    async def metrics(self) -> dict[tuple[str, tuple], float]:
        async with self.http.get(self.h.url + "/metrics") as r:
            text = await r.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    async def value(self, name: str, **labels) -> float | None:
        return (await self.metrics()).get((name, tuple(sorted(labels.items()))))

    async def stream(self, name: str) -> dict:
        async with self.http.get(f"{self.h.url}/streams/{name}") as r:
            return await r.json()

    async def wait_for(self, check: Callable, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await check():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; metrics: {await self.metrics()}"
        )

    async def wait_flowing(self, name: str) -> None:
        async def flowing() -> bool:
            return (await self.value("fvq_frames_received_total", stream=name) or 0) > 0 and await self.value(
                "fvq_stream_up", stream=name
            ) == 1

        await self.wait_for(flowing, f"frames of {name!r}")


def run(h: MonitorHarness, body: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            await body(Client(h, http))

    asyncio.run(main())


def test_published_face_video_is_measured_then_deleted(face_frames: list[np.ndarray]) -> None:
    with harness() as h:

        async def body(c: Client) -> None:
            pub = await c.publish("cam1", face_frames)
            try:
                await c.wait_flowing("cam1")
                assert (
                    await c.value("fvq_frames_dropped_total", stream="cam1", reason="ingest_busy") is not None
                )

                async def measured() -> bool:
                    s = await c.stream("cam1")
                    windows = await c.value("fvq_windows_analysed_total", stream="cam1") or 0
                    return s["resolution"] == [320, 240] and (windows > 0 or not HAS_SIGNALS)

                await c.wait_for(measured, "a resolution and analysed windows")
                s = await c.stream("cam1")
                assert s["kind"] == "whip" and s["state"] == "up" and s["codec"] in ("vp8", "h264")
                assert s["bitrate_bps"] > 0

                status, text, _ = await c.request("DELETE", pub.location)
                assert status == 200, text
                assert await c.value("fvq_stream_up", stream="cam1") == 0
                assert (await c.stream("cam1"))["state"] == "ended"  # still visible after the publisher left
                status, _, _ = await c.request("DELETE", pub.location)
                assert status == 404
            finally:
                await pub.close()

            # the name is free again: a new publisher replaces the ended stream
            again = await c.publish("cam1", face_frames)
            try:
                await c.wait_flowing("cam1")
            finally:
                await again.close()  # the publisher vanishes without DELETE: the track/connection ends it
            await c.wait_for(
                lambda: _eq(c.stream("cam1"), "state", "ended"),
                "the stream to end when its publisher left",
                15,
            )

        run(h, body)


async def _eq(coro, key: str, value) -> bool:
    return (await coro)[key] == value


def test_bad_requests_are_refused_and_a_good_stream_still_flows(face_frames: list[np.ndarray]) -> None:
    with harness(whip_token="s3cret", whip_max_body_bytes=4096, cors_origins=["https://studio.example"]) as h:
        auth = {"Authorization": "Bearer s3cret"}

        async def body(c: Client) -> None:
            pc, track = await c.offer(face_frames, audio=True)
            offer = pc.localDescription.sdp
            await pc.close()
            track.stop()

            status, text, headers = await c.request("POST", "/whip/cam", data=offer, headers=SDP)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and "Authorization" in text
            bad_token = {**SDP, "Authorization": "Bearer nope"}
            status, text, _ = await c.request("POST", "/whip/cam", data=offer, headers=bad_token)
            assert status == 401 and "wrong" in text
            status, text, _ = await c.request(
                "POST", "/whip/cam", data=offer, headers={**auth, "Content-Type": "text/plain"}
            )
            assert status == 415 and "application/sdp" in text
            status, text, _ = await c.request(
                "POST", "/whip/bad%20name!", data=offer, headers={**auth, **SDP}
            )
            assert status == 400 and "stream name" in text
            status, text, _ = await c.request("POST", "/whip/cam", data="hello", headers={**auth, **SDP})
            assert status == 400 and "malformed SDP" in text
            big = offer + "a=x-padding:" + "x" * 5000 + "\r\n"
            status, text, _ = await c.request("POST", "/whip/cam", data=big, headers={**auth, **SDP})
            assert status == 413 and "whip_max_body_bytes" in text

            audio_only = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            audio_only.addTransceiver("audio", direction="sendonly")
            await audio_only.setLocalDescription(await audio_only.createOffer())
            status, text, _ = await c.request(
                "POST", "/whip/cam", data=audio_only.localDescription.sdp, headers={**auth, **SDP}
            )
            await audio_only.close()
            assert status == 400 and "no video m-line" in text

            no_codec = re.sub(r"(VP8|H264|rtx)/90000", "XYZ/90000", offer)
            status, text, _ = await c.request("POST", "/whip/cam", data=no_codec, headers={**auth, **SDP})
            assert status == 400 and "VP8 or H.264" in text

            status, _, headers = await c.request("OPTIONS", "/whip/cam", headers={"Origin": "https://evil.example"})
            assert status == 204 and headers["Accept-Post"] == "application/sdp"
            assert "Access-Control-Allow-Origin" not in headers  # not on the allow-list
            status, _, headers = await c.request("OPTIONS", "/whip/cam", headers={"Origin": "https://studio.example"})
            assert headers["Access-Control-Allow-Origin"] == "https://studio.example"
            assert "Authorization" in headers["Access-Control-Allow-Headers"]
            assert "Location" in headers["Access-Control-Expose-Headers"]
            status, text, _ = await c.request("PATCH", "/whip/cam/xyz", headers=auth)
            assert status == 405 and "trickle" in text
            status, _, _ = await c.request("DELETE", "/whip/cam/xyz", headers=auth)
            assert status == 404
            status, _, _ = await c.request("DELETE", "/whip/cam/xyz")
            assert status == 401

            assert h.monitor.snapshot() == []  # nothing refused above left a stream behind
            # a good publisher with the token flows (with audio, which is accepted and discarded)
            pc, track = await c.offer(face_frames, audio=True)
            headers = {**auth, **SDP}
            async with c.http.post(f"{h.url}/whip/cam", data=pc.localDescription.sdp, headers=headers) as r:
                assert r.status == 201, await r.text()
                await pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
                location = r.headers["Location"]
            try:
                await c.wait_flowing("cam")
                status, _, _ = await c.request("DELETE", location, headers=auth)
                assert status == 200
            finally:
                track.stop()
                await pc.close()

        run(h, body)


def test_stream_cap_refuses_with_503_and_the_admitted_stream_flows(face_frames: list[np.ndarray]) -> None:
    with harness(max_streams=1) as h:

        async def body(c: Client) -> None:
            pub = await c.publish("one", face_frames)
            try:
                await c.wait_flowing("one")
                pc, track = await c.offer(face_frames)
                status, text, _ = await c.request(
                    "POST", "/whip/two", data=pc.localDescription.sdp, headers=SDP
                )
                assert status == 503 and "max_streams" in text
                status, text, _ = await c.request(
                    "POST", "/whip/one", data=pc.localDescription.sdp, headers=SDP
                )
                assert status == 409 and "already" in text
                track.stop()
                await pc.close()
                assert await c.value("fvq_streams_refused_total", reason="limit") == 1
                before = await c.value("fvq_frames_received_total", stream="one") or 0

                async def still_flowing() -> bool:
                    return (await c.value("fvq_frames_received_total", stream="one") or 0) > before

                await c.wait_for(still_flowing, "more frames of the admitted stream")
                assert "two" not in {s["name"] for s in h.monitor.snapshot()}
            finally:
                await c.request("DELETE", pub.location)
                await pub.close()

        run(h, body)


def test_a_publisher_that_never_connects_is_ended(face_frames: list[np.ndarray], monkeypatch) -> None:
    monkeypatch.setattr("stream.http.whip.CONNECT_TIMEOUT_S", 0.5)
    with harness() as h:

        async def body(c: Client) -> None:
            pc, track = await c.offer(face_frames)
            status, _, _ = await c.request("POST", "/whip/ghost", data=pc.localDescription.sdp, headers=SDP)
            await pc.close()  # the answer is never applied: ICE never completes
            assert status == 201
            await c.wait_for(
                lambda: _eq(c.stream("ghost"), "state", "ended"), "the unconnected session to end", 5
            )

        run(h, body)


class _SlowStream:
    """A stream whose conversion blocks until released, to show frames are dropped rather than queued."""

    def __init__(self) -> None:
        self.name = "slow"
        self.release = threading.Event()
        self.pushed = 0
        self.opened: list[tuple[int, int]] = []
        self.state = SimpleNamespace(opened=lambda w, h, fps, codec: self.opened.append((w, h)))

    def push(self, frame: av.VideoFrame) -> None:
        self.release.wait(5)
        self.pushed += 1


class _FrameTrack:
    kind = "video"

    def __init__(self, n: int) -> None:
        self.frames = [
            av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24") for _ in range(n)
        ]

    async def recv(self) -> av.VideoFrame:
        if not self.frames:
            raise MediaStreamError
        await asyncio.sleep(0)
        return self.frames.pop()


def test_ingest_drops_frames_while_the_previous_one_is_converted() -> None:
    from concurrent.futures import ThreadPoolExecutor

    metrics = build_metrics()
    stream = _SlowStream()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            ingest = VideoIngest(_FrameTrack(10), stream, pool, metrics)  # type: ignore[arg-type]
            await ingest.run()
            stream.release.set()
            await ingest.settle()

    asyncio.run(main())
    assert stream.pushed == 1
    assert (
        metrics.registry.get_sample_value(
            "fvq_frames_dropped_total", {"stream": "slow", "reason": "ingest_busy"}
        )
        == 9
    )
    assert stream.opened == [(64, 48)]


def problem(sdp: str) -> str:
    return check_offer(sdp) or ""


def test_offer_checks_name_what_is_wrong() -> None:
    assert "empty" in problem("")
    assert "v=0" in problem("hello\r\n")
    assert "line 2" in problem("v=0\r\nnot sdp\r\n")
    assert "bad media line" in problem("v=0\r\nm=video\r\n")
    assert "no video m-line" in problem("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
    assert "no video m-line" in problem("v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n")  # port 0: refused
    assert "truncated" in problem("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")  # no ICE/DTLS lines
    dtls = "a=ice-ufrag:u\r\na=ice-pwd:p\r\na=fingerprint:sha-256 AB\r\n"
    assert "a=setup" in problem(f"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n{dtls}")
    assert check_offer(f"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n{dtls}a=setup:actpass\r\n") is None
    audio = "m=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n"
    answer = f"v=0\r\n{audio}m=video 9 X 97 96\r\na=rtpmap:97 H264/90000\r\n"
    assert accepted_video_codec(answer) == "h264"
    assert accepted_video_codec("v=0\r\nm=video 9 X 96\r\na=inactive\r\na=rtpmap:96 VP8/90000\r\n") is None
