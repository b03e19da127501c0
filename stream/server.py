"""The HTTP server: /metrics, /healthz, /streams, and the WHIP endpoint, on aiohttp."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream.monitor import Monitor

log = logging.getLogger(__name__)

MONITOR_KEY: web.AppKey[Monitor] = web.AppKey("monitor", Monitor)


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


async def stream_handler(request: web.Request) -> web.Response:
    name = request.match_info["stream"]
    for s in request.app[MONITOR_KEY].snapshot():
        if s["name"] == name:
            return web.json_response(s)
    raise web.HTTPNotFound(text=f"no stream named {name!r}\n")


def build_app(monitor: Monitor) -> web.Application:
    app = web.Application(client_max_size=monitor.config.server.whip_max_body_bytes)
    app[MONITOR_KEY] = monitor
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz_handler)
    app.router.add_get("/streams", streams_handler)
    app.router.add_get("/streams/{stream}", stream_handler)
    from stream.whip import add_whip_routes

    add_whip_routes(app, monitor)
    from stream.api import add_api_routes

    add_api_routes(app, monitor)  # /api/v1 (the stream API) and /hooks (media-server publish notifications)
    return app


async def start_server(monitor: Monitor, host: str | None = None, port: int | None = None) -> web.AppRunner:
    """Starts the HTTP server; returns the runner (its `addresses` give the bound port when port=0)."""
    app = build_app(monitor)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or monitor.config.server.host, monitor.config.server.port if port is None else port)
    await site.start()
    return runner
