"""A WHIP publisher for the benchmarks: sends an H.264 MPEG-TS file's packets as they are (no re-encode) to a monitor.

The packets are paced by their timestamps (a gap in them is a publisher stall) and aiortc's H.264 payloader
sends the encoder's own bitstream, damage included. (aiortc's MediaPlayer with decode=False ended these files
early, so the track here demuxes them itself.)
    python -m benchmarks.whip_publish http://127.0.0.1:9108/whip/cam1 clip.ts
"""

from __future__ import annotations

import asyncio
import sys
from fractions import Fraction

import aiohttp
import av


class PacketTrack:
    """An aiortc video track of a file's H.264 packets (Annex B, as MPEG-TS carries them), in real time."""

    def __new__(cls, path: str):  # built on first use: aiortc is imported only by this program
        from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

        class _Track(MediaStreamTrack):
            kind = "video"

            def __init__(self) -> None:
                super().__init__()
                self.container = av.open(path)
                self.stream = self.container.streams.video[0]
                self.packets = self.container.demux(self.stream)
                self.first: float | None = None
                self.start = 0.0

            async def recv(self) -> av.Packet:
                while True:
                    try:
                        packet = next(self.packets)
                    except (StopIteration, av.error.FFmpegError):
                        self.stop()
                        raise MediaStreamError from None
                    if packet.size and packet.pts is not None:
                        break
                t = float(packet.pts * packet.time_base)
                loop = asyncio.get_running_loop()
                if self.first is None:
                    self.first, self.start = t, loop.time()
                wait = self.start + (t - self.first) - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                packet.pts = int(round((t - self.first) * 90000))
                packet.time_base = Fraction(1, 90000)
                return packet

        return _Track()


async def publish(url: str, path: str, timeout_s: float = 600.0) -> int:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    track = PacketTrack(path)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # loopback: host candidates only
    transceiver = pc.addTransceiver(track, direction="sendonly")
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/h264"]
    transceiver.setCodecPreferences(h264)  # the packets are H.264: nothing else may be negotiated
    await pc.setLocalDescription(await pc.createOffer())
    location = None
    async with aiohttp.ClientSession() as http:
        try:
            async with http.post(url, data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp"}) as r:
                answer = await r.text()
                if r.status != 201:
                    print(f"WHIP {url}: HTTP {r.status}: {answer.strip()}", file=sys.stderr)
                    return 1
                location = r.headers.get("Location")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while track.readyState != "ended" and loop.time() < deadline:
                await asyncio.sleep(0.5)
        finally:
            if location:
                base = url.split("/whip/")[0]
                try:
                    async with http.delete(base + location):
                        pass
                except aiohttp.ClientError:
                    pass
            await pc.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    return asyncio.run(publish(args[0], args[1]))


if __name__ == "__main__":
    sys.exit(main())
