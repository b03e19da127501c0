"""WHIP ingest (RFC 9725), the peer side: a WebRTC publisher's video, decoded by aiortc, pushed into a monitor stream.

The HTTP endpoint that answers the offers lives in stream/http/whip.py; this module holds the session, the
track reader and the SDP checks it applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.ops.metrics import Metrics

if TYPE_CHECKING:
    from stream.live.monitor import Stream

SDP = "application/sdp"
STATS_INTERVAL_S = 1.0  # how often the received bitrate is sampled from the transport


@dataclass(eq=False)
class WhipSession:
    """One publisher: its peer connection, the stream it feeds, and the tasks that serve it."""

    id: str
    stream_name: str
    stream: Stream
    pc: RTCPeerConnection
    client: str = "unknown"
    codec: str | None = None
    closing: bool = False
    connected_at: float | None = None
    tasks: list[asyncio.Future] = field(default_factory=list)
    ingests: list[VideoIngest] = field(default_factory=list)


class VideoIngest:
    """Receives decoded frames from a track and hands each to `stream.push` in the executor, one at a time per
    stream; a frame arriving while the previous one is still being converted is dropped (`ingest_busy`)."""

    def __init__(
        self,
        track: MediaStreamTrack,
        stream: Stream,
        executor: Executor,
        metrics: Metrics,
        codec: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.track = track
        self.stream = stream
        self.executor = executor
        self.metrics = metrics
        self.codec = codec
        self.pending: asyncio.Future | None = None
        self._size: tuple[int, int] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        name = self.stream.name
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            if self.pending is not None and not self.pending.done():
                self.metrics.frames_dropped.labels(name, "ingest_busy").inc()
                continue
            size = (frame.width, frame.height)
            if size != self._size:  # the first frame, or the publisher changed resolution (WebRTC adapts it)
                self._size = size
                self.stream.state.opened(frame.width, frame.height, None, self.codec() or "webrtc")
            self.pending = loop.run_in_executor(self.executor, _push, self.stream, frame)

    async def settle(self) -> None:
        """Waits for the frame being converted, if any."""
        if self.pending is not None and not self.pending.done():
            await asyncio.wait([self.pending])


def _push(stream: Stream, frame: av.VideoFrame) -> None:
    try:
        stream.push(frame)
    except Exception as exc:  # one bad frame must not stop the stream; it is counted and logged
        stream.state.error(
            "decode", f"whip:{stream.name}: frame conversion failed: {type(exc).__name__}: {exc}"
        )


async def _discard(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


async def _sample_bitrate(receiver, stream: Stream) -> None:
    """Feeds the stream's bitrate from the transport's byte counter: RTP payload and headers, and with BUNDLE
    also the audio and RTCP sharing the transport (a few percent of a video stream)."""
    last: int | None = None
    while True:
        report = await receiver.getStats()
        total = sum(s.bytesReceived for s in report.values() if getattr(s, "type", None) == "transport")
        if last is not None and total > last:
            stream.state.packet(total - last)
        last = total
        await asyncio.sleep(STATS_INTERVAL_S)


_SDP_LINE = re.compile(r"^[a-z]=")


def check_offer(sdp: str) -> str | None:
    """What is wrong with an SDP offer for WHIP ingest, or None when it looks usable."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        return "the body is empty: send an SDP offer"
    if lines[0].strip() != "v=0":
        return f"malformed SDP: the first line must be 'v=0', not {lines[0][:40]!r}"
    for number, line in enumerate(lines, 1):
        if not _SDP_LINE.match(line):
            return f"malformed SDP: line {number} is not '<type>=<value>': {line[:40]!r}"
    video = False
    for line in lines:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                expected = "expected 'm=<media> <port> <proto> <fmt> ...'"
                return f"malformed SDP: bad media line {line[:60]!r} ({expected})"
            if parts[0] == "video" and parts[1] != "0":
                video = True
    if not video:
        return "the offer has no video m-line: add a video track (sendonly) to the peer connection"
    for attribute, what in (("a=ice-ufrag:", "ICE username"), ("a=ice-pwd:", "ICE password"),
                            ("a=fingerprint:", "DTLS fingerprint"), ("a=setup:", "DTLS role")):
        if not any(line.startswith(attribute) for line in lines):
            return (f"the offer has no {attribute[:-1]} line ({what}): it is incomplete or truncated; "
                    "send the whole offer from createOffer()")
    return None


def accepted_video_codec(answer: str) -> str | None:
    """The codec the answer receives video with (the first payload type of its first accepted video section),
    or None when every video section was refused."""
    sections: list[list[str]] = []
    for line in answer.splitlines():
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    for section in sections:
        parts = section[0][2:].split()
        if parts[0] != "video" or parts[1] == "0" or len(parts) < 4:
            continue
        if any(line.strip() in ("a=inactive", "a=sendonly") for line in section):
            continue
        for line in section:
            if line.startswith(f"a=rtpmap:{parts[3]} "):
                return line.split(" ", 1)[1].split("/")[0].lower()
        return parts[3]
    return None


def filter_candidates(sdp: str, allow_private: bool, max_candidates: int) -> tuple[str, int, int]:
    """The offer without the ICE candidates the server must not contact: (offer, kept, dropped). Loopback,
    private, link-local, multicast, unspecified and reserved addresses and unresolved host names (mDNS) are
    dropped unless `allow_private`; past `max_candidates` the rest are dropped too."""
    out, kept, dropped = [], 0, 0
    newline = "\r\n" if "\r\n" in sdp else "\n"
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("a=candidate:"):
            parts = line.split()
            ok = len(parts) >= 8 and kept < max_candidates and (allow_private or _public(parts[4]))
            if not ok:
                dropped += 1
                continue
            kept += 1
        out.append(line)
    return newline.join(out), kept, dropped


def _public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a host name (mDNS .local): resolving it is contacting an internal resolver
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:  # NAT64, 6to4, mapped and compatible forms reach the IPv4 address inside
            return _public(str(embedded))
    return ip.is_global and not ip.is_multicast


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_6TO4 = ipaddress.ip_network("2002::/16")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, where it is a translation of one (else None)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64_LOCAL:  # a site's own translator: whatever it embeds is on the inside
        return ipaddress.IPv4Address("10.0.0.0")
    if ip in _6TO4:
        return ip.sixtofour
    return None
