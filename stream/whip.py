"""WHIP ingest (RFC 9725): a WebRTC publisher's video, decoded by aiortc, pushed into a monitor stream."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.config import SourceConfig, SourceKind, check_stream_name
from stream.metrics import Metrics
from stream.monitor import Monitor, Stream, StreamExistsError, StreamLimitError

log = logging.getLogger(__name__)

SDP = "application/sdp"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location, Accept-Post",
}
CONNECT_TIMEOUT_S = 30.0  # a session whose ICE/DTLS never connects is closed after this long
STATS_INTERVAL_S = 1.0  # how often the received bitrate is sampled from the transport
REPLACE_WAIT_S = 1.0  # how long a POST waits for an ended stream of the same name to be drained


class WhipEndpoint:
    """The WHIP endpoint `/whip/{stream}` and its sessions `/whip/{stream}/{session}`.

    - POST an SDP offer (`Content-Type: application/sdp`, all ICE candidates in it): 201 with the answer,
      `Location` naming the session. Only non-trickle ICE: PATCH on a session answers 405.
    - DELETE the session: the peer connection is closed and the stream ends (its state stays visible as
      "ended"; a new POST for the same name replaces it).
    - OPTIONS: 204 with `Accept-Post` and CORS headers, so a page on another origin can publish.

    The server never contacts a STUN/TURN server (no ICE servers): it offers host candidates only.
    Frames are converted in a small shared thread pool, at most one frame per stream at a time; a frame
    that arrives while its stream's previous one is still being converted is dropped and counted as
    `fvq_frames_dropped_total{reason="ingest_busy"}`. Audio is accepted and discarded.
    """

    def __init__(self, monitor: Monitor, executor: Executor | None = None) -> None:
        self.monitor = monitor
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(
            max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="whip-convert"
        )
        self.sessions: dict[str, WhipSession] = {}
        self.connect_timeout_s = CONNECT_TIMEOUT_S
        self._background: set[asyncio.Task] = set()

    # HTTP handlers
    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**CORS_HEADERS, "Accept-Post": SDP})

    async def post(self, request: web.Request) -> web.Response:
        server = self.monitor.config.server
        if (refused := self._unauthorized(request)) is not None:
            return refused
        name = request.match_info["stream"]
        try:
            check_stream_name(name)
        except ValueError as exc:
            return _error(400, str(exc))
        if request.content_type != SDP:
            return _error(
                415, f"Content-Type must be {SDP} (an SDP offer), not {request.content_type or 'missing'!r}"
            )
        limit = server.whip_max_body_bytes
        too_big = f"the SDP offer is larger than {limit} bytes (server.whip_max_body_bytes)"
        if request.content_length is not None and request.content_length > limit:
            return _error(413, too_big)
        body = bytearray()
        async for chunk in request.content.iter_chunked(16384):
            body += chunk
            if len(body) > limit:
                return _error(413, too_big)
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "the SDP offer is not UTF-8 text")
        if (problem := check_offer(offer)) is not None:
            return _error(400, problem)

        try:
            stream = await self._add_stream(name)
        except StreamExistsError as exc:
            return _error(409, f"{exc}; DELETE its WHIP session first or publish under another name")
        except StreamLimitError as exc:
            return _error(503, f"{exc}; try again when a stream has ended")
        self.monitor.metrics.frames_dropped.labels(name, "ingest_busy")  # the series exists from the start

        session = WhipSession(
            secrets.token_urlsafe(16), name, stream, RTCPeerConnection(RTCConfiguration(iceServers=[]))
        )
        self._watch(session)
        try:
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            answer = await session.pc.createAnswer()
            # aiortc gathers every host candidate before returning: the answer holds them all
            await session.pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises ValueError, InvalidStateError, OperationError for bad offers
            await self._abandon(session)
            hint = "video must be VP8 or H.264; the offer needs ICE credentials and a DTLS fingerprint"
            return _error(400, f"the SDP offer could not be negotiated: {exc} ({hint})")
        local = session.pc.localDescription.sdp
        codec = accepted_video_codec(local)
        if codec is None:
            await self._abandon(session)
            return _error(400, "no video codec in common: publish VP8 or H.264 video")
        session.codec = codec
        self.sessions[session.id] = session
        session.tasks.append(asyncio.create_task(self._connect_watchdog(session)))
        log.info("whip: stream %s published (session %s, %s)", name, session.id, codec)
        headers = {**CORS_HEADERS, "Location": f"/whip/{name}/{session.id}", "Content-Type": SDP}
        return web.Response(status=201, body=local.encode(), headers=headers)

    async def delete(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        session = self.sessions.get(request.match_info["session"])
        if session is None or session.stream_name != request.match_info["stream"]:
            return _error(404, "no such WHIP session (it ended, or the URL is not one this server returned)")
        await self.close_session(session, "deleted by the publisher")
        return web.Response(status=200, headers=CORS_HEADERS)

    async def patch(self, request: web.Request) -> web.Response:
        return _error(
            405,
            "trickle ICE and ICE restarts are not supported: send every candidate in the offer",
            {"Allow": "DELETE, OPTIONS"},
        )

    # sessions
    async def close_session(self, session: WhipSession, reason: str) -> None:
        """Closes the peer connection and ends the stream; safe to call more than once."""
        if session.closing:
            return
        session.closing = True
        self.sessions.pop(session.id, None)
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        for task in session.tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for ingest in session.ingests:
            await ingest.settle()  # a frame still being converted must not arrive after END
        await session.pc.close()
        session.stream.end()
        log.info("whip: stream %s ended (session %s): %s", session.stream_name, session.id, reason)

    async def close_all(self, app: web.Application | None = None) -> None:
        await asyncio.gather(
            *(self.close_session(s, "server shutting down") for s in list(self.sessions.values()))
        )

    async def shutdown_executor(self, app: web.Application | None = None) -> None:
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)

    # internals
    def _unauthorized(self, request: web.Request) -> web.Response | None:
        token = self.monitor.config.server.whip_token
        if not token:
            return None
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return None
        why = "missing Authorization header" if not given else "the bearer token is wrong"
        return _error(
            401, f"{why}: send `Authorization: Bearer <server.whip_token>`", {"WWW-Authenticate": "Bearer"}
        )

    async def _add_stream(self, name: str) -> Stream:
        source = SourceConfig(name=name, url=f"whip:{name}", kind=SourceKind.whip)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPLACE_WAIT_S
        while True:
            try:
                return self.monitor.add_stream(source)  # no thread is started for whip streams: cheap
            except StreamExistsError:
                # a stream that has just ended is replaceable once the analysis loop has drained its END
                old = self.monitor.streams.get(name)
                live = any(s.stream_name == name for s in self.sessions.values())
                if old is None or live or old.state.state not in ("ended", "error") or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _abandon(self, session: WhipSession) -> None:
        """A session whose negotiation failed: nothing was received, so its stream is removed altogether."""
        await self.close_session(session, "negotiation failed")
        if self.monitor.streams.get(session.stream_name) is session.stream:
            self.monitor.remove_stream(session.stream_name)

    def _watch(self, session: WhipSession) -> None:
        pc = session.pc
        video_taken = False

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            nonlocal video_taken
            if track.kind == "video" and not video_taken:
                video_taken = True
                ingest = VideoIngest(
                    track, session.stream, self.executor, self.monitor.metrics, lambda: session.codec
                )
                session.ingests.append(ingest)
                session.tasks.append(asyncio.create_task(self._run_ingest(session, ingest)))
                receiver = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)
                if receiver is not None:
                    session.tasks.append(asyncio.create_task(_sample_bitrate(receiver, session.stream)))
            else:  # audio, and any further video track: consumed (aiortc's queue would grow), then discarded
                session.tasks.append(asyncio.create_task(_discard(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not session.closing:
                self._spawn(self.close_session(session, f"connection {pc.connectionState}"))

    async def _run_ingest(self, session: WhipSession, ingest: VideoIngest) -> None:
        await ingest.run()
        if not session.closing:  # the track ended: the publisher stopped sending
            self._spawn(self.close_session(session, "the video track ended"))

    async def _connect_watchdog(self, session: WhipSession) -> None:
        await asyncio.sleep(self.connect_timeout_s)
        if session.pc.connectionState != "connected":
            self._spawn(
                self.close_session(
                    session, f"not connected after {self.connect_timeout_s:g} s (ICE/DTLS failed?)"
                )
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._background.discard)


@dataclass(eq=False)
class WhipSession:
    """One publisher: its peer connection, the stream it feeds, and the tasks that serve it."""

    id: str
    stream_name: str
    stream: Stream
    pc: RTCPeerConnection
    codec: str | None = None
    closing: bool = False
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


def _error(status: int, reason: str, extra: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers={**CORS_HEADERS, **(extra or {})})


WHIP_KEY: web.AppKey[WhipEndpoint] = web.AppKey("whip", WhipEndpoint)


def add_whip_routes(app: web.Application, monitor: Monitor) -> None:
    """Mounts the WHIP endpoint on the app; peer connections are closed on app shutdown."""
    endpoint = WhipEndpoint(monitor)
    app[WHIP_KEY] = endpoint
    app.router.add_route("OPTIONS", "/whip/{stream}", endpoint.options)
    app.router.add_post("/whip/{stream}", endpoint.post)
    app.router.add_route("OPTIONS", "/whip/{stream}/{session}", endpoint.options)
    app.router.add_delete("/whip/{stream}/{session}", endpoint.delete)
    app.router.add_route("PATCH", "/whip/{stream}/{session}", endpoint.patch)
    app.on_shutdown.append(endpoint.close_all)
    app.on_cleanup.append(endpoint.shutdown_executor)
