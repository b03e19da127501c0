"""Stream lifecycle with real aiortc WHIP publishers on loopback: ended sessions leave /streams and /metrics after
the retention, fvq_streams_active counts what is live, silent and undecodable peers time out and free their slot,
one address holds a bounded number of sessions, and WHIP off loopback needs a token."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import vpx

from stream.ingest.whip import filter_candidates
from stream.live.analysis import Analyzer
from tests.harness import MonitorHarness
from tests.stream.test_whip import SDP, Client, FaceTrack, harness, monitor_config, run
from tests.stream.test_whip import face_frames as face_frames  # noqa: F401 - the fixture


def stream_series(metrics: dict[tuple[str, tuple], float]) -> int:
    return sum(1 for (_, labels) in metrics if any(k == "stream" for k, _ in labels))


class GoesSilent(FaceTrack):
    """A camera that stops sending after a few frames while the connection stays up."""

    async def recv(self):
        if self.index >= 15:
            await asyncio.Event().wait()
        return await super().recv()


async def publish(c: Client, name: str, frames, track_cls=FaceTrack):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = track_cls(frames)
    pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with c.http.post(f"{c.h.url}/whip/{name}", data=pc.localDescription.sdp, headers=SDP) as r:
        text = await r.text()
        status, location = r.status, r.headers.get("Location")
    if status != 201:
        track.stop()
        await pc.close()
        return status, text, None
    await pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
    return status, location, (pc, track)


def test_ended_sessions_leave_after_retention_and_the_series_return_to_baseline(face_frames) -> None:
    with harness(ended_retention_s=1.0, whip_max_sessions_per_client=3, max_streams=6) as h:

        async def body(c: Client) -> None:
            baseline = stream_series(await c.metrics())
            for round_ in range(3):  # 9 sessions in all, 3 at a time (the per-client cap)
                names = [f"cam{round_}{i}" for i in range(3)]
                held = []
                for name in names:
                    status, location, peer = await publish(c, name, face_frames)
                    assert status == 201, location
                    held.append((location, peer))
                status, text, _ = await publish(c, "one-too-many", face_frames)
                assert status == 429 and "whip_max_sessions_per_client" in text
                for name in names:
                    await c.wait_flowing(name)
                assert await c.value("fvq_streams_active") == 3
                for location, (pc, track) in held:
                    status, _, _ = await c.request("DELETE", location)
                    assert status == 200
                    track.stop()
                    await pc.close()

                async def none_active() -> bool:
                    return await c.value("fvq_streams_active") == 0

                await c.wait_for(none_active, "fvq_streams_active to drop to 0", 5)
                snapshot = {s["name"]: s for s in h.monitor.snapshot()}
                assert all(snapshot[n]["state"] == "ended" and snapshot[n]["end_reason"] == "deleted"
                           for n in names if n in snapshot)

            async def back_to_baseline() -> bool:
                return stream_series(await c.metrics()) == baseline and h.monitor.snapshot() == []

            await c.wait_for(back_to_baseline, "ended streams to leave /streams and /metrics", 5)
            assert await c.value("fvq_whip_sessions_ended_total", reason="deleted") == 9

        run(h, body)


def test_silent_and_undecodable_peers_time_out_and_free_their_slot(face_frames, monkeypatch) -> None:
    # 2.5 s: the watchdog judges "media arrives" from the byte samples taken 1.1 s after the connection on (whip.py);
    # with 1.5 s that left one sample at most, and a loaded CI host ended the undecodable peer as silent
    with harness(whip_idle_timeout_s=2.5, whip_max_sessions_per_client=2, ended_retention_s=30) as h:

        async def body(c: Client) -> None:
            status, location, (pc, track) = await publish(c, "quiet", face_frames, GoesSilent)
            assert status == 201
            await c.wait_flowing("quiet")

            async def ended(name: str, reason: str):
                async def check() -> bool:
                    s = await c.stream(name)
                    # a peer that vanished without a goodbye is down (not a broken source: never `error`)
                    return s["state"] == "down" and s["end_reason"] == reason
                return check

            await c.wait_for(await ended("quiet", "silent"), "the silent peer to be ended", 8)
            assert await c.value("fvq_whip_sessions_ended_total", reason="silent") == 1
            track.stop()
            await pc.close()

            # a publisher whose VP8 is garbage: media arrives, no frame decodes
            encode = vpx.Vp8Encoder.encode

            def garbage(self, frame, force_keyframe=False):
                payloads, timestamp = encode(self, frame, force_keyframe)
                return [p[:6] + bytes(len(p) - 6) for p in payloads], timestamp

            monkeypatch.setattr(vpx.Vp8Encoder, "encode", garbage)
            status, location, (pc, track) = await publish(c, "garbled", face_frames)
            assert status == 201
            await c.wait_for(await ended("garbled", "undecodable"), "the undecodable peer to be ended", 10)
            s = await c.stream("garbled")
            assert s["frames_received"] == 0 and "no frame decoded" in (s["last_error"] or "")
            track.stop()
            await pc.close()
            monkeypatch.undo()

            # both slots are free again
            for name in ("again1", "again2"):
                status, location, (pc, track) = await publish(c, name, face_frames)
                assert status == 201, location
                await c.request("DELETE", location)
                track.stop()
                await pc.close()

        run(h, body)


def test_candidate_filter_drops_internal_targets() -> None:
    offer = ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
             "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n"
             "a=candidate:2 1 udp 1 10.1.2.3 5000 typ host\r\n"
             "a=candidate:3 1 udp 1 169.254.169.254 80 typ host\r\n"
             "a=candidate:4 1 udp 1 abcd.local 5000 typ host\r\n"
             "a=candidate:5 1 udp 1 8.8.8.8 5000 typ host\r\n"
             "a=candidate:6 1 udp 1 ::1 5000 typ host\r\n")
    filtered, kept, dropped = filter_candidates(offer, allow_private=False, max_candidates=16)
    assert (kept, dropped) == (1, 5) and "8.8.8.8" in filtered and "127.0.0.1" not in filtered
    assert "169.254.169.254" not in filtered and "abcd.local" not in filtered
    _, kept, dropped = filter_candidates(offer, allow_private=True, max_candidates=2)
    assert (kept, dropped) == (2, 4)


@pytest.mark.parametrize("cut", [0.1, 0.5])
def test_a_truncated_offer_and_private_only_candidates_get_a_clear_400(face_frames, cut) -> None:
    with harness(ice_allow_private=False) as h:

        async def body(c: Client) -> None:
            pc, track = await c.offer(face_frames)
            offer = pc.localDescription.sdp
            track.stop()
            await pc.close()
            status, text, _ = await c.request("POST", "/whip/cam", data=offer[: int(len(offer) * cut)],
                                              headers=SDP)
            assert status == 400 and ("truncated" in text or "no video m-line" in text), text
            assert "NoneType" not in text
            # the whole offer, but its host candidates are all private here: refused, nothing contacted
            if "a=candidate:" in offer:
                status, text, _ = await c.request("POST", "/whip/cam", data=offer, headers=SDP)
                assert status == 400 and "ice_allow_private" in text, text
            assert h.monitor.snapshot() == []

        run(h, body)


def test_whip_off_loopback_needs_a_token(face_frames) -> None:
    """The default-deny: a client at a non-loopback address of this host is refused without a token."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the host's outward address
        address = probe.getsockname()[0]
    except OSError:
        pytest.skip("this host has no non-loopback IPv4 address")
    finally:
        probe.close()
    if address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address")
    # the server listens on that address only (not on every interface); the test connects from this host
    with MonitorHarness(monitor_config(), Analyzer(face=None, rater=None), host=address) as h:

        async def body(c: Client) -> None:
            pc, track = await c.offer(face_frames)
            track.stop()
            await pc.close()
            status, text, _ = await c.request("POST", "/whip/cam", data=pc.localDescription.sdp, headers=SDP)
            assert status == 403 and "allow_anonymous_ingest" in text and "whip_token" in text, text
            assert h.monitor.snapshot() == []

        run(h, body)
    allowed = monitor_config(allow_anonymous_ingest=True)
    with MonitorHarness(allowed, Analyzer(face=None, rater=None), host=address) as h:

        async def body2(c: Client) -> None:
            pc, track = await c.offer(face_frames)
            track.stop()
            await pc.close()
            status, text, _ = await c.request("POST", "/whip/cam", data=pc.localDescription.sdp, headers=SDP)
            assert status == 201, text

        run(h, body2)
