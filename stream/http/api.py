"""The stream API: /api/v1/streams to list, add, replace and delete streams at run time, /api/v1/reload."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from stream.config import ConfigError, SourceConfig
from stream.http.access import authorized
from stream.http.catalog import CatalogError, catalog_for
from stream.http.control import MAX_JSON_DEPTH, ControlLane, LaneBusyError, json_depth_exceeded
from stream.live.monitor import Monitor

PREFIX = "/api/v1"


def _error(status: int, message: str) -> web.Response:
    resp = web.json_response({"error": message}, status=status)
    if status in (429, 503):  # a refusal for now (busy, the stream cap, no worker up): when to try again
        resp.headers["Retry-After"] = "2"
    return resp


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        msg = "unknown key (check its spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def _busy(exc: LaneBusyError) -> web.Response:
    resp = _error(exc.status, str(exc))
    resp.headers["Retry-After"] = str(exc.retry_after_s)
    return resp


API_THREADS = 4  # changes under way at once (each mostly waits: on a worker, a reader's start)
API_QUEUE = 256  # stream API changes waiting at most; past it a call is refused at once (429)
API_START_WITHIN_S = 4.0  # a change not started this long after it arrived is refused (503), never applied later


class StreamApi:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        # changes run on threads of their own (the catalog claims each name, so two calls never race on one);
        # reads never queue behind them
        self.lane = ControlLane("stream API", threads=API_THREADS, max_queued=API_QUEUE, start_within_s=API_START_WITHIN_S,
                                on_refused=self._refused)

    def _refused(self, reason: str) -> None:
        self.monitor.metrics.streams_refused.labels(reason).inc()

    @property
    def catalog(self):
        return catalog_for(self.monitor)

    @web.middleware
    async def guard(self, request: web.Request, handler):
        if request.path.startswith(PREFIX + "/") or request.path == PREFIX:
            why = authorized(request, self.monitor.config.server.api_token)
            if why is not None:
                status = 401 if self.monitor.config.server.api_token else 403
                resp = _error(status, why)
                if status == 401:
                    resp.headers["WWW-Authenticate"] = "Bearer"
                return resp
        return await handler(request)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            text = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            text = "\ufffd"  # not JSON: answered below
        if json_depth_exceeded(text):
            raise web.HTTPBadRequest(text=json.dumps({"error": f"the body nests deeper than {MAX_JSON_DEPTH} levels: "
                                                               "a source is a flat JSON object"}),
                                     content_type="application/json")
        try:
            body = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object (a source)"}),
                                     content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object (a source)"}),
                                     content_type="application/json")
        return body

    def _source(self, body: dict[str, Any]) -> SourceConfig:
        try:
            return SourceConfig.model_validate(body)
        except ValidationError as exc:
            raise web.HTTPBadRequest(text=json.dumps({"error": validation_message(exc)}),
                                     content_type="application/json") from None

    async def _run(self, fn, *args):
        return await self.lane.run(fn, *args)

    async def _describe(self, name: str) -> dict[str, Any] | None:
        """One stream as the API shows it (the front overrides this and `_list`: its answers come from workers)."""
        return self.catalog.describe(name)

    async def _list(self) -> list[dict[str, Any]]:
        return self.catalog.list()

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": await self._list()})

    async def create(self, request: web.Request) -> web.Response:
        source = self._source(await self._body(request))
        try:
            await self._run(self.catalog.add, source)
        except LaneBusyError as exc:
            return _busy(exc)
        except CatalogError as exc:
            return _error(exc.status, str(exc))
        return web.json_response(await self._describe(source.name), status=201,
                                 headers={"Location": f"{PREFIX}/streams/{source.name}"})

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        info = await self._describe(name)
        if info is None:
            return _error(404, f"no stream named {name!r}")
        return web.json_response(info)

    async def put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await self._body(request)
        if body.setdefault("name", name) != name:
            return _error(400, f"name: the body names {body['name']!r} but the URL names {name!r}")
        source = self._source(body)
        try:
            created = await self._run(self.catalog.replace, source)
        except LaneBusyError as exc:
            return _busy(exc)
        except CatalogError as exc:
            return _error(exc.status, str(exc))
        return web.json_response(await self._describe(name), status=201 if created else 200)

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            removed = await self._run(self.catalog.remove, name)
        except LaneBusyError as exc:
            return _busy(exc)
        if not removed:
            return _error(404, f"no stream named {name!r}")
        return web.Response(status=204)

    async def reload(self, request: web.Request) -> web.Response:
        try:
            summary = await self._run(self.catalog.reload)
        except LaneBusyError as exc:
            return _busy(exc)
        except CatalogError as exc:
            return _error(exc.status, str(exc))
        except ConfigError as exc:
            return _error(400, f"the config file was not applied: {exc}")
        return web.json_response(summary)


def add_api_routes(app: web.Application, monitor: Monitor) -> None:
    """The stream API and the media-server hooks (stream.http.hooks) on the monitor's HTTP server."""
    from stream.http.hooks import Hooks

    add_routes(app, StreamApi(monitor), Hooks(monitor))


def add_routes(app: web.Application, api: StreamApi, hooks: Any) -> None:
    """/api/v1 and /hooks on `app`, answered by `api` and `hooks` (the monitor's, or the front's over its workers)."""
    app.middlewares.append(api.guard)
    app.router.add_get(f"{PREFIX}/streams", api.list)
    app.router.add_post(f"{PREFIX}/streams", api.create)
    app.router.add_get(f"{PREFIX}/streams/{{name}}", api.get)
    app.router.add_put(f"{PREFIX}/streams/{{name}}", api.put)
    app.router.add_delete(f"{PREFIX}/streams/{{name}}", api.delete)
    app.router.add_post(f"{PREFIX}/reload", api.reload)
    app.router.add_post("/hooks/nginx/{event}", hooks.nginx)
    app.router.add_post("/hooks/srs/{event}", hooks.srs)
    app.router.add_post("/hooks/nms", hooks.nms)
