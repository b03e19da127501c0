"""The HTTP server: /metrics, /healthz, /streams, and the WHIP endpoint, on aiohttp, with a production
server's limits: header and body timeouts, connection caps overall and per client address, keep-alive limits,
a maximum header size; every refusal counted in fvq_http_rejected_total{reason}."""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import logging
import resource
import socket
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream.config import ServerConfig
from stream.live.monitor import Monitor
from stream.ops.metrics import Metrics

log = logging.getLogger(__name__)

MONITOR_KEY: web.AppKey[Monitor] = web.AppKey("monitor", Monitor)
TRIMMER_KEY: web.AppKey[Any] = web.AppKey("allocator_trimmer")


async def metrics_handler(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR_KEY]
    body = generate_latest(monitor.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz_handler(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR_KEY]
    streams = monitor.snapshot()
    body = {
        "status": "ok" if monitor.healthy else "analysis loop stalled",
        "streams": len(streams),
        "streams_up": sum(1 for s in streams if s["state"] == "up"),
        "analysis_error": monitor.loop_error,
    }
    return web.json_response(body, status=200 if monitor.healthy else 503)


async def streams_handler(request: web.Request) -> web.Response:
    return web.json_response({"streams": request.app[MONITOR_KEY].snapshot()})


REJECT_LOG_INTERVAL_S = 10.0
# what a refused client is told, by fvq_http_rejected_total reason
REASONS = {
    "connections": "the server holds as many connections as server.max_connections allows",
    "client_connections": "too many connections from your address (server.max_connections_per_client)",
    "header_timeout": "the request headers did not arrive within server.header_timeout_s",
    "body_timeout": "the request body did not arrive within server.body_timeout_s",
    "body_too_large": "the request body is larger than server.whip_max_body_bytes",
    "header_too_large": "a request line or header is longer than server.max_header_bytes",
    "bad_request": "the request is not valid HTTP/1.1",
    "bad_body": "the request body cannot be read as sent (its Content-Encoding or chunked framing is broken)",
}


class ConnectionLimits:
    """Counts open connections overall and per client address, admits or refuses new ones, counts and logs
    (at most one line per reason every 10 s, with a count) every refusal."""

    def __init__(self, cfg: ServerConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.total = 0
        self.per_client: collections.Counter[str] = collections.Counter()
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in cfg.limit_exempt_clients]
        self._logged: dict[str, list] = {}  # reason -> [last logged at, held back since, last client]
        for reason in REASONS:
            metrics.http_rejected.labels(reason)

    def is_exempt(self, client: str) -> bool:
        if not self.exempt:
            return False
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in net for net in self.exempt)

    def admit(self, client: str) -> str | None:
        """None when the connection may open (and is counted), else the reason it is refused."""
        if not self.is_exempt(client):
            if self.total >= self.cfg.max_connections:
                return "connections"
            if self.per_client[client] >= self.cfg.max_connections_per_client:
                return "client_connections"
        self.total += 1
        self.per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    def reject(self, reason: str, client: str) -> None:
        self.metrics.http_rejected.labels(reason).inc()
        now = time.monotonic()
        entry = self._logged.setdefault(reason, [-float("inf"), 0, client])
        entry[1] += 1
        entry[2] = client
        if now - entry[0] >= REJECT_LOG_INTERVAL_S:
            since = "" if entry[0] == -float("inf") else f" in the last {now - entry[0]:.0f} s"
            log.warning("HTTP: refused %d connection(s) or request(s)%s: %s (latest from %s)",
                        entry[1], since, REASONS[reason], client)
            entry[0], entry[1] = now, 0


def _refusal(status: int, reason: str) -> bytes:
    text = f"{REASONS[reason]}; try again later\n".encode()
    phrase = {503: "Service Unavailable"}.get(status, "Error")
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode() + text


class LimitedRequestHandler(RequestHandler):
    """aiohttp's connection handler under ConnectionLimits: refuses over-cap connections with a 503 before
    reading anything, closes a connection whose request headers take longer than header_timeout_s (slowloris,
    or a client that connects and sends nothing), and answers unparseable requests with one log line, not a
    traceback. It reads aiohttp 3.x's handler state (`_current_request`, `_messages`); tests/stream/test_hostile.py
    fails if that changes."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, client: str, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._client = client  # admitted by the _Gate, which counted it
        self._admitted = False
        self._header_handle: asyncio.TimerHandle | None = None
        self.served = 0  # requests on this connection (keep-alive limit)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._admitted = True
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._limits.release(self._client)
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        idle = self._current_request is None and not self._messages
        if idle and self._header_handle is None:
            self._arm_header_timer()  # the next request on a keep-alive connection starts now
        super().data_received(data)
        if self._messages or self._current_request is not None:
            self._disarm_header_timer()  # its headers are complete

    def _arm_header_timer(self) -> None:
        self._header_handle = self._loop.call_later(self._limits.cfg.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_handle is not None:
            self._header_handle.cancel()
            self._header_handle = None

    def _header_timeout(self) -> None:
        self._header_handle = None
        if self._current_request is None and not self._messages and self.transport is not None:
            self._limits.reject("header_timeout", self._client)
            self.force_close()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 400 and isinstance(exc, HttpProcessingError):  # the request could not be parsed
            too_large = isinstance(exc, LineTooLong)
            reason = "header_too_large" if too_large else "bad_request"
            self._limits.reject(reason, self._client)
            detail = f" (longest allowed: {self._limits.cfg.max_header_bytes} bytes)" if too_large else ""
            resp = web.Response(status=431 if too_large else 400, text=f"{REASONS[reason]}{detail}\n")
            resp.force_close()
            return resp
        return super().handle_error(request, status, exc, message)


class _Gate(asyncio.Protocol):
    """The protocol of every new connection: refuses it with a 503 when over a cap (before anything is read, and
    without building aiohttp's handler: cheap under a flood), else hands the transport to a LimitedRequestHandler."""

    def __init__(self, server: LimitedServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self.server.limits
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if peer else "unknown"
        reason = limits.admit(client)
        if reason is not None:
            limits.reject(reason, client)
            transport.write(_refusal(503, reason))  # type: ignore[attr-defined]
            transport.close()
            return
        handler = LimitedRequestHandler(self.server, loop=self.server._loop, limits=limits, client=client,
                                        **self.server._kwargs)
        transport.set_protocol(handler)
        handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # a refused connection's bytes: ignored
        pass


class LimitedServer(web.Server):
    """aiohttp's Server whose connections pass a _Gate first."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        return _Gate(self)


class LimitedAppRunner(web.AppRunner):
    """An AppRunner whose server applies ConnectionLimits."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return LimitedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                             limits=self.limits, **plain._kwargs)


def limits_middleware(limits: ConnectionLimits):
    """Reads a request's body within body_timeout_s (and at most client_max_size bytes) before its handler runs,
    and closes a keep-alive connection after keepalive_max_requests requests."""
    cfg = limits.cfg

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        proto = request.protocol
        client = getattr(proto, "_client", request.remote or "unknown")
        if request.body_exists:
            try:
                await asyncio.wait_for(request.read(), cfg.body_timeout_s)
            except TimeoutError:
                limits.reject("body_timeout", client)
                return _refused(408, "body_timeout")
            except web.HTTPRequestEntityTooLarge:
                limits.reject("body_too_large", client)
                return _refused(413, "body_too_large", f" ({cfg.whip_max_body_bytes} bytes)")
            except (RequestPayloadError, HttpProcessingError):  # gzip that is not gzip, broken chunks
                limits.reject("bad_body", client)
                request.content.feed_eof()  # nothing more is read from it (aiohttp would drain it, and raise again)
                return _refused(400, "bad_body")
        response = await handler(request)
        if isinstance(proto, LimitedRequestHandler):
            proto.served += 1
            if proto.served >= cfg.keepalive_max_requests:
                response.force_close()
        return response

    return middleware


def _refused(status: int, reason: str, detail: str = "") -> web.Response:
    response = web.Response(status=status, text=f"{REASONS[reason]}{detail}\n")
    response.force_close()
    return response


def raise_open_file_limit(wanted: int) -> int:
    """Raises this process's soft open-file limit towards `wanted` (within the hard limit); returns the soft
    limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class PortInUseError(OSError):
    """The HTTP port cannot be bound; the message names the address."""


def build_app(monitor: Monitor, limits: ConnectionLimits | None = None) -> web.Application:
    middlewares = [limits_middleware(limits)] if limits is not None else []
    app = web.Application(client_max_size=monitor.config.server.whip_max_body_bytes, middlewares=middlewares)
    app[MONITOR_KEY] = monitor
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz_handler)
    app.router.add_get("/streams", streams_handler)
    from stream.http.viewer import add_viewer_routes

    add_viewer_routes(app, monitor)  # `/`, `/streams/{stream}` (a page for browsers), its frames and timeline
    from stream.http.whip import add_whip_routes

    add_whip_routes(app, monitor)
    from stream.http.api import add_api_routes

    add_api_routes(app, monitor)  # /api/v1 (the stream API) and /hooks (media-server publish notifications)
    app.cleanup_ctx.append(_allocator_trimmer)
    return app


async def _allocator_trimmer(app: web.Application):
    """The serving process's arena limit (limits.malloc_arenas) and AllocatorTrimmer (limits.memory_trim_every_s),
    for as long as the app runs."""
    from stream.live.memory import AllocatorTrimmer, limit_arenas

    limits = app[MONITOR_KEY].config.limits
    limit_arenas(limits.malloc_arenas)  # before monitor.start() starts the decode and analysis threads
    trimmer = AllocatorTrimmer(limits.memory_trim_every_s).start()
    app[TRIMMER_KEY] = trimmer
    yield
    await asyncio.get_running_loop().run_in_executor(None, trimmer.stop)


async def start_server(monitor: Monitor, host: str | None = None, port: int | None = None) -> web.AppRunner:
    """Starts the HTTP server; returns the runner (its `addresses` give the bound port when port=0).
    Raises PortInUseError, naming the address, when the port cannot be bound."""
    cfg = monitor.config.server
    wanted = cfg.max_connections + 256 + 8 * monitor.config.limits.max_streams  # connections, streams, spare
    soft = raise_open_file_limit(wanted)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("the open-file limit is %d, under the %d that server.max_connections=%d and the streams may "
                    "need: lower server.max_connections or raise `ulimit -n`", soft, wanted, cfg.max_connections)
    limits = ConnectionLimits(cfg, monitor.metrics)
    app = build_app(monitor, limits)
    runner = limited_runner(app, limits)
    await runner.setup()
    host = host or cfg.host
    port = cfg.port if port is None else port
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise port_error(exc, host, port) from None
    return runner


def limited_runner(app: web.Application, limits: ConnectionLimits) -> LimitedAppRunner:
    """The runner of a public HTTP server (one process's, or the front's): ConnectionLimits and the config's
    keep-alive, header-size and lingering bounds. The app must carry limits_middleware(limits)."""
    cfg = limits.cfg
    return LimitedAppRunner(
        app, limits, access_log=None, keepalive_timeout=cfg.keepalive_timeout_s,
        max_line_size=cfg.max_header_bytes, max_field_size=cfg.max_header_bytes,
        lingering_time=min(2.0, cfg.body_timeout_s),  # reading what is left of a refused body: bounded
    )


def port_error(exc: OSError, host: str, port: int) -> PortInUseError:
    """The PortInUseError, naming the address, for a failed bind."""
    why = "the address is in use (another fvq serve?)" if exc.errno == errno.EADDRINUSE else exc.strerror
    return PortInUseError(exc.errno, f"cannot listen on http://{host}:{port}: {why}")


def bind_http_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound before anything else starts (the front binds it before its
    workers); raises PortInUseError naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise port_error(exc, host, port) from None
