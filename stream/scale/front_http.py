"""The front's public HTTP: merged views, per-stream routes forwarded to the owning worker, WHIP, and serving it all."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from stream import __version__
from stream.admission import NoWorkerError, StreamCapError
from stream.config import MonitorConfig, SourceConfig, SourceKind, check_stream_name
from stream.scale.front import Front, Worker
from stream.scale.workers import CLIENT_HEADER, TOKEN_HEADER
from stream.sources import source_type

log = logging.getLogger("stream.scale.front")  # the logger these lines have always had

FORWARD_OWN = {CLIENT_HEADER.lower(), TOKEN_HEADER.lower()}  # set by the front only, never passed on from a client
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade",
              "proxy-authorization", "te", "trailer", "content-encoding"}


def _reload(catalog) -> None:
    """SIGHUP: re-read the config file; a bad file changes nothing and says why."""
    try:
        catalog.reload()
    except Exception as exc:
        log.error("SIGHUP: the config file was not applied: %s", exc)


FRONT_KEY: web.AppKey[Front] = web.AppKey("front", Front)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[FRONT_KEY].metrics_text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _streams(request: web.Request) -> web.Response:
    return web.json_response({"streams": await request.app[FRONT_KEY].snapshot()})


async def _healthz(request: web.Request) -> web.Response:
    front = request.app[FRONT_KEY]
    workers = front.pool.workers()
    answering = [wid for wid in workers if wid in front.last_ok]
    unhealthy = [wid for wid in answering if not front.loads.get(wid, {}).get("healthy", True)]
    streams = await front.snapshot()
    ok = bool(answering) and not unhealthy
    body = {
        "status": "ok" if ok and len(answering) == len(workers) else ("degraded" if answering else "no worker up"),
        "workers": len(workers), "workers_up": len(answering), "workers_stalled": unhealthy,
        "streams": len(streams), "streams_up": sum(1 for s in streams if s["state"] == "up"),
    }
    if hasattr(front.pool, "spares_ready"):
        body["worker_spares_ready"] = front.pool.spares_ready()
    return web.json_response(body, status=200 if answering else 503)


async def _sd(request: web.Request) -> web.Response:
    """Prometheus http_sd: one target group per worker, labelled with its worker id and node."""
    groups = []
    for wid, w in sorted(request.app[FRONT_KEY].pool.workers().items()):
        if w.url:
            host = w.url.split("://", 1)[1].rstrip("/")
            groups.append({"targets": [host], "labels": {"worker": wid, "node": w.node}})
    return web.json_response(groups)


async def forward(front: Front, w: Worker, request: web.Request) -> web.StreamResponse:
    """The request as it came, to the worker; its answer as it came back."""
    assert front.session is not None
    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in HOP_BY_HOP and k.lower() not in FORWARD_OWN}
    # the worker sees the front's address: it is told the client's, which it believes only with the token
    headers[CLIENT_HEADER], headers[TOKEN_HEADER] = request.remote or "unknown", front.token
    body = await request.read()
    try:
        async with front.session.request(request.method, w.url + request.rel_url.path_qs, data=body or None,
                                         headers=headers, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=60)) as r:
            payload = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=r.status, body=payload, headers=out)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return web.Response(status=502, text=f"the worker holding this stream did not answer: {exc}\n")


def _owner_handler(front: Front):
    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["stream"]
        w = front.owner(name)
        if w is None or not w.url:
            p = front.placements.get(name)
            if p is None:
                raise web.HTTPNotFound(text=f"no stream named {name!r}\n")
            raise web.HTTPServiceUnavailable(text=f"stream {name!r} is moving to worker {p.worker}; try again\n",
                                             headers={"Retry-After": "1"})
        return await forward(front, w, request)

    return handler


def add_owner_routes(app: web.Application, front: Front, pattern: str, methods: Iterable[str] = ("*",)) -> None:
    """Forwards every request on `pattern` (which names `{stream}`) to the worker that owns that stream; e.g.
    `add_owner_routes(app, front, "/api/v1/streams/{stream}")`."""
    handler = _owner_handler(front)
    for m in methods:
        app.router.add_route(m, pattern, handler)


def _whip_post(front: Front):
    async def handler(request: web.Request) -> web.StreamResponse:
        from stream.http.whip import ingest_refusal

        name = request.match_info["stream"]
        server = front.config.server
        client = request.remote or "unknown"
        # default-deny and the per-client cap from the real address, before anything is placed (the worker
        # checks both again, from the address the front forwards)
        if (refused := ingest_refusal(server, client, request.headers.get("Authorization", ""))) is not None:
            return refused
        held = sum(1 for q in front.placements.values()
                   if q.pushed and q.client == client and not q.ended and q.state != "error")
        if held >= server.whip_max_sessions_per_client:
            return web.Response(status=429, headers={"Retry-After": "5"}, text=(
                f"your address holds {held} WHIP sessions already (server.whip_max_sessions_per_client="
                f"{server.whip_max_sessions_per_client}): DELETE one first\n"))
        try:
            check_stream_name(name)
        except ValueError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        placed = None
        p = front.placements.get(name)
        if p is None or not p.pushed:
            if p is not None:
                return web.Response(status=409, text=f"a stream named {name!r} is already being watched\n")
            source = SourceConfig(name=name, url=f"whip:{name}", kind=SourceKind.whip)
            try:
                placed = p = await front.add_source(source, pushed=True)
                p.client = client
            except NoWorkerError as exc:
                front.metrics.streams_refused.labels("no_worker").inc()
                return web.Response(status=503, text=f"{exc}\n", headers={"Retry-After": "1"})
            except StreamCapError as exc:  # counted by add_source
                return web.Response(status=503, text=f"{exc}; try again when a stream has ended\n",
                                    headers={"Retry-After": "5"})
        w = front.pool.workers().get(p.worker)
        if w is None or not w.url:
            return web.Response(status=503, text="the stream's worker is restarting; try again\n",
                                headers={"Retry-After": "1"})
        response = await forward(front, w, request)
        if placed is not None and response.status >= 300:
            front._drop(placed, f"its WHIP offer was refused ({response.status})")
        return response

    return handler


async def _whip_options(request: web.Request) -> web.Response:
    from stream.ingest.whip import SDP

    return web.Response(status=204, headers={"Accept-Post": SDP})  # CORS: _cors, for allowed origins only


async def _cors(request: web.Request, response: web.StreamResponse) -> None:
    from stream.http.whip import cors_headers

    response.headers.update(cors_headers(request.app[FRONT_KEY].config.server, request))


def build_front_app(front: Front, catalog=None, limits=None) -> web.Application:
    """The front's HTTP: merged views, per-stream routes to the owner, and (given the front's catalog, a
    stream.scale.front_api.FrontCatalog) the stream API and media-server hooks; under `limits` (a
    stream.http.server.ConnectionLimits) the single process's body timeout and keep-alive limit."""
    from stream.http.server import limits_middleware

    middlewares = [limits_middleware(limits)] if limits is not None else []
    app = web.Application(client_max_size=front.config.server.whip_max_body_bytes, middlewares=middlewares)
    app[FRONT_KEY] = front
    app.on_response_prepare.append(_cors)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/streams", _streams)
    app.router.add_get("/sd", _sd)
    add_owner_routes(app, front, "/streams/{stream}", ("GET",))
    app.router.add_post("/whip/{stream}", _whip_post(front))
    app.router.add_route("OPTIONS", "/whip/{stream}", _whip_options)
    add_owner_routes(app, front, "/whip/{stream}/{session}", ("OPTIONS", "DELETE", "PATCH"))
    add_owner_routes(app, front, "/streams/{stream}/{rest:.+}", ("GET",))  # its frames, evidence and timeline
    from stream.scale.front_pages import add_front_pages

    add_front_pages(app, front)  # `/`: every worker's streams
    if catalog is not None:
        from stream.scale.front_api import add_front_api_routes

        add_front_api_routes(app, catalog)
    return app


async def serve_front(config: MonitorConfig, pool_factory, duration: float = 0.0, table: bool = False,
                      ready=None, config_path=None, overrides: dict | None = None) -> None:
    """Starts the pool (via `pool_factory(token, poke)`), the front and its HTTP server; runs until SIGINT/SIGTERM
    (or `duration` seconds); SIGHUP re-reads `config_path` and applies the difference in its streams.
    `ready(front, url)` is called once serving."""
    import signal
    import sys

    from stream.http.server import ConnectionLimits, bind_http_socket, limited_runner, raise_open_file_limit

    token = secrets.token_urlsafe(24)
    loop = asyncio.get_running_loop()
    front_box: list[Front] = []
    # the public port first: one in use is a clear error (PortInUseError) before any worker starts
    raise_open_file_limit(config.server.max_connections + 256 + 8 * config.limits.max_streams)
    listening = bind_http_socket(config.server.host, config.server.port)

    def poke() -> None:
        if front_box:
            loop.call_soon_threadsafe(front_box[0].poke)

    try:
        pool = await loop.run_in_executor(None, pool_factory, token, poke)
    except BaseException:
        listening.close()
        raise
    front = Front(config, pool, token)
    front_box.append(front)
    runner = catalog = placing = None
    try:
        from stream.scale.front_api import FrontCatalog

        await front.start()
        catalog = FrontCatalog(front, loop, config_path, overrides)
        # RTMP listen first (the front's nginx; a port in use stops the start), then the HTTP is served while the
        # other sources are placed: with thousands of them /healthz answers from the start, and --duration holds
        listen = [s for s in config.sources if source_type(s.kind).rtmp_listener]
        await loop.run_in_executor(None, catalog.streams.start, listen)
        await front.reconcile()  # the placement's series are right from the first request
        # the single process's limits: timeouts, connection caps (503 + reason), keep-alive and header bounds
        limits = ConnectionLimits(config.server, front.metrics)
        runner = limited_runner(build_front_app(front, catalog, limits), limits)
        await runner.setup()
        site = web.SockSite(runner, listening)
        await site.start()
        addr = runner.addresses[0] if runner.addresses else (config.server.host, config.server.port)
        url = f"http://{addr[0]}:{addr[1]}"
        print(f"fvq {__version__}: serving {url}/metrics  /streams  /healthz  /sd  POST /whip/{{stream}} "
              f"({len(pool.workers())} workers)", flush=True)
        if ready is not None:
            ready(front, url)
        rest = [s for s in config.sources if not source_type(s.kind).rtmp_listener]

        def place_the_rest() -> None:
            catalog.streams.start(rest)
            if not catalog.streams.closing.is_set():
                catalog.load_state()  # persisted API streams, placed once, by the front

        placing = loop.run_in_executor(None, place_the_rest)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, _reload, catalog))
        started = time.monotonic()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
            if table:
                from stream.ops.table import render_table

                sys.stdout.write(render_table(await front.snapshot()))
                sys.stdout.flush()
            if duration and time.monotonic() - started > duration:
                break
    finally:
        if runner is None:
            listening.close()
        if catalog is not None:
            catalog.streams.closing.set()  # the placement still going on stops at its next stream
            if placing is not None:
                await asyncio.wait({placing}, timeout=15)
            await loop.run_in_executor(None, catalog.streams.close)
        await front.stop()
        if runner is not None:
            await runner.cleanup()
        await loop.run_in_executor(None, pool.stop)
