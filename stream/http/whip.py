"""The WHIP endpoint (RFC 9725): offers answered, sessions ended, tokens and CORS; the peer is stream/ingest/whip.py."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
from collections.abc import Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from stream.admission import StreamExistsError, StreamLimitError
from stream.config import ServerConfig, SourceConfig, SourceKind, check_stream_name
from stream.ingest.whip import (
    SDP,
    STATS_INTERVAL_S,
    VideoIngest,
    WhipSession,
    _discard,
    _sample_bitrate,
    accepted_video_codec,
    check_offer,
    filter_candidates,
)
from stream.live.monitor import Monitor, Stream

log = logging.getLogger(__name__)

CORS_HEADERS = {  # sent only to origins listed in server.cors_origins
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location, Accept-Post",
}
CONNECT_TIMEOUT_S = 30.0  # a session whose ICE/DTLS never connects is closed after this long
WATCH_INTERVAL_S = 0.5  # how often a session's watchdog looks at it
MEDIA_BYTES, MEDIA_BYTES_PER_S = 4000, 1000  # over this since the last frame, a peer is sending media, not RTCP
REPLACE_WAIT_S = 1.0  # how long a POST waits for an ended stream of the same name to be drained

class WhipEndpoint:
    """The WHIP endpoint `/whip/{stream}` and its sessions `/whip/{stream}/{session}`.

    - POST an SDP offer (`Content-Type: application/sdp`, all ICE candidates in it): 201 with the answer,
      `Location` naming the session. Only non-trickle ICE: PATCH on a session answers 405.
    - DELETE the session: the peer connection is closed and the stream ends (its state stays visible as
      "ended"; a new POST for the same name replaces it).
    - OPTIONS: 204 with `Accept-Post` (and CORS headers for an origin in `server.cors_origins`).

    Off loopback a request needs `server.whip_token` unless `server.allow_anonymous_ingest` is set; one client
    address holds at most `server.whip_max_sessions_per_client` sessions. The offer's ICE candidates are
    filtered: loopback, private, link-local and mDNS targets are dropped unless `server.ice_allow_private`.
    A session that does not connect within 30 s, or delivers no decodable frame for `whip_idle_timeout_s`, is
    ended; each end is counted in `fvq_whip_sessions_ended_total{reason}`.

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
        # (token header, client header, token): a request carrying the front's worker token names its real
        # client in the client header (set by stream.scale.workers); from anyone else that header is ignored
        self.forwarder: tuple[str, str, str] | None = None
        self._background: set[asyncio.Task] = set()

    # HTTP handlers
    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Accept-Post": SDP})

    async def add_cors(self, request: web.Request, response: web.StreamResponse) -> None:
        """CORS headers on WHIP responses, for the origins the config allows (none by default)."""
        response.headers.update(cors_headers(self.monitor.config.server, request))

    async def post(self, request: web.Request) -> web.Response:
        server = self.monitor.config.server
        if (refused := self._unauthorized(request)) is not None:
            return refused
        client = self.client(request)
        held = sum(1 for s in self.sessions.values() if s.client == client)
        if held >= server.whip_max_sessions_per_client:
            return _error(429, f"your address holds {held} WHIP sessions already "
                               f"(server.whip_max_sessions_per_client={server.whip_max_sessions_per_client}): "
                               "DELETE one first", {"Retry-After": "5"})
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
        body = await request.read()  # within server.body_timeout_s and client_max_size (the server's middleware)
        if len(body) > limit:
            return _error(413, too_big)
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "the SDP offer is not UTF-8 text")
        if (problem := check_offer(offer)) is not None:
            return _error(400, problem)
        offer, kept, dropped = filter_candidates(offer, server.ice_allow_private, server.ice_max_candidates)
        if dropped and not kept:
            return _error(400, f"none of the offer's {dropped} ICE candidates may be contacted: loopback, private, "
                               "link-local and mDNS addresses are refused unless server.ice_allow_private is set")

        try:
            stream = await self._add_stream(name)
        except StreamExistsError as exc:
            return _error(409, f"{exc}; DELETE its WHIP session first or publish under another name")
        except StreamLimitError as exc:
            return _error(503, f"{exc}; try again when a stream has ended")
        self.monitor.metrics.frames_dropped.labels(name, "ingest_busy")  # the series exists from the start

        session = WhipSession(
            secrets.token_urlsafe(16), name, stream, RTCPeerConnection(RTCConfiguration(iceServers=[])), client
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
            return _error(400, f"the SDP offer could not be negotiated: {type(exc).__name__}: {exc} ({hint})")
        local = session.pc.localDescription.sdp
        codec = accepted_video_codec(local)
        if codec is None:
            await self._abandon(session)
            return _error(400, "no video codec in common: publish VP8 or H.264 video")
        session.codec = codec
        self.sessions[session.id] = session
        session.tasks.append(asyncio.create_task(self._watchdog(session)))
        log.info("whip: stream %s published (session %s..., %s)", name, session.id[:6], codec)  # the id is a key
        headers = {"Location": f"/whip/{name}/{session.id}", "Content-Type": SDP}
        return web.Response(status=201, body=local.encode(), headers=headers)

    async def delete(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        session = self.sessions.get(request.match_info["session"])
        if session is None or session.stream_name != request.match_info["stream"]:
            return _error(404, "no such WHIP session (it ended, or the URL is not one this server returned)")
        if self.client(request) != session.client:  # the token lets one publish, not end another's session
            return _error(403, "only the publisher that created this WHIP session (from its address) may end it")
        await self.close_session(session, "deleted by the publisher", "deleted")
        return web.Response(status=200)

    async def patch(self, request: web.Request) -> web.Response:
        return _error(
            405,
            "trickle ICE and ICE restarts are not supported: send every candidate in the offer",
            {"Allow": "DELETE, OPTIONS"},
        )

    # sessions
    async def close_session(self, session: WhipSession, reason: str, code: str = "closed") -> None:
        """Closes the peer connection and ends the stream (`code`: the fvq_whip_sessions_ended_total reason);
        safe to call more than once."""
        if session.closing:
            return
        session.closing = True
        self.monitor.metrics.whip_sessions_ended.labels(code).inc()
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
        session.stream.end(code)
        log.info("whip: stream %s ended (session %s...): %s", session.stream_name, session.id[:6], reason)

    async def close_all(self, app: web.Application | None = None) -> None:
        await asyncio.gather(
            *(self.close_session(s, "server shutting down", "shutdown") for s in list(self.sessions.values()))
        )

    async def shutdown_executor(self, app: web.Application | None = None) -> None:
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)

    # internals
    def client(self, request: web.Request) -> str:
        """The publisher's address: the socket's peer, or, behind the front, the address the front saw."""
        if self.forwarder is not None:
            token_header, client_header, token = self.forwarder
            given = request.headers.get(token_header, "")
            named = request.headers.get(client_header)
            if named and given and hmac.compare_digest(given.encode(), token.encode()):
                return named
        return request.remote or "unknown"

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        server = self.monitor.config.server
        return ingest_refusal(server, self.client(request), request.headers.get("Authorization", ""))


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
                if old is None or live or old.state.state not in ("ended", "error", "down") or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _abandon(self, session: WhipSession) -> None:
        """A session whose negotiation failed: nothing was received, so its stream is removed altogether."""
        await self.close_session(session, "negotiation failed", "negotiation_failed")
        self.monitor.remove_stream(session.stream_name, only=session.stream)

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
            if pc.connectionState == "connected" and session.connected_at is None:
                session.connected_at = time.monotonic()
            if pc.connectionState in ("failed", "closed") and not session.closing:
                self._spawn(self.close_session(session, f"connection {pc.connectionState}", "disconnected"))

    async def _run_ingest(self, session: WhipSession, ingest: VideoIngest) -> None:
        await ingest.run()
        if not session.closing:  # the track ended: the publisher stopped sending
            self._spawn(self.close_session(session, "the video track ended", "track_ended"))

    async def _watchdog(self, session: WhipSession) -> None:
        """Ends a session that never connects, or that stops delivering decodable frames."""
        started = time.monotonic()
        idle_timeout = self.monitor.config.server.whip_idle_timeout_s
        state = session.stream.state
        while not session.closing:
            await asyncio.sleep(min(WATCH_INTERVAL_S, self.connect_timeout_s))
            now = time.monotonic()
            if session.connected_at is None:
                if now - started >= self.connect_timeout_s:
                    why = f"not connected after {self.connect_timeout_s:g} s (ICE/DTLS failed?)"
                    self._spawn(self.close_session(session, why, "never_connected"))
                    return
                continue
            last = max(session.connected_at, state.last_frame_at or 0.0)
            if now - last >= idle_timeout:
                # media still arriving (not just RTCP, a few hundred bytes a second) since the last frame?
                since = last + STATS_INTERVAL_S + 0.1  # the first byte sample after it may hold its frames
                span = min(now - since, state.RATE_SPAN_S)  # the byte samples kept
                media = state.bytes_since(since) > max(MEDIA_BYTES, MEDIA_BYTES_PER_S * span)
                code = "undecodable" if media else "silent"
                why = (f"media arrives but no frame decoded for {idle_timeout:g} s" if media
                       else f"no media for {idle_timeout:g} s")
                state.error("decode" if media else "silent", f"whip:{session.stream_name}: {why}")
                self._spawn(self.close_session(session, why, code))
                return

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._background.discard)


def cors_headers(server: ServerConfig, request: web.Request) -> dict[str, str]:
    """The CORS headers a WHIP response gets: none unless its Origin is in server.cors_origins."""
    origin = request.headers.get("Origin")
    allowed = server.cors_origins
    if not origin or not request.path.startswith("/whip/") or not allowed:
        return {}
    if "*" in allowed or origin in allowed:
        return {**CORS_HEADERS, "Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {}


def ingest_refusal(server: ServerConfig, client: str | None, given: str) -> web.Response | None:
    """None when a WHIP request from `client` with Authorization header `given` may go on, else its 401/403:
    off loopback a token is needed unless server.allow_anonymous_ingest (used by one process and the front)."""
    token = server.whip_token
    if not token:
        if server.allow_anonymous_ingest or _is_loopback(client):
            return None
        return _error(403, "WHIP from another host needs a token: set server.whip_token (publishers send "
                           "`Authorization: Bearer <token>`), or server.allow_anonymous_ingest: true")
    scheme, _, value = given.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return None
    why = "missing Authorization header" if not given else "the bearer token is wrong"
    return _error(
        401, f"{why}: send `Authorization: Bearer <server.whip_token>`", {"WWW-Authenticate": "Bearer"}
    )


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _error(status: int, reason: str, extra: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers=extra or {})


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
    app.on_response_prepare.append(endpoint.add_cors)
    app.on_shutdown.append(endpoint.close_all)
    app.on_cleanup.append(endpoint.shutdown_executor)
