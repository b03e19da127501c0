"""The stream API, reload and media-server hooks on the front: the single-process catalog over the front's placements.

A stream added by the API or a hook is placed on a worker by cost (Front.place) and started there; `persist: true`
is written to the state file by the front only (workers never see a config file or a state file), and reload
re-reads the config file in the front and applies the difference across the workers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from stream.api import PREFIX, StreamApi, _error
from stream.catalog import Catalog, CatalogError, _scrub
from stream.config import SourceConfig, SourceKind

CALL_TIMEOUT_S = 60.0


class FrontStreams:
    """What the catalog and the hooks need of a monitor, answered by the front: adds and removes run on the front's
    event loop (the catalog calls them from an executor thread, as it does a monitor's)."""

    def __init__(self, front: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.front, self.loop = front, loop
        self.config = front.config
        self.metrics = SimpleNamespace(hook_events=front.metrics.hook_events)

    def _call(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT_S)

    def add_stream(self, source: SourceConfig) -> None:
        from stream.front import NoWorkerError, StreamCapError, StreamPlacedError, WorkerRefusedError
        from stream.monitor import StreamExistsError, StreamLimitError

        try:
            self._call(self.front.place(source))
        except StreamPlacedError as exc:
            raise StreamExistsError(str(exc)) from None
        except StreamCapError as exc:
            raise StreamLimitError(str(exc)) from None
        except NoWorkerError as exc:
            raise CatalogError(str(exc), 503) from None
        except WorkerRefusedError as exc:
            raise CatalogError(str(exc), exc.status) from None

    def remove_stream(self, name: str) -> None:
        self._call(self.front.remove_source(name))


class FrontCatalog(Catalog):
    """Config, API and hook streams of the front, by origin; where each runs is the front's placement."""

    def __init__(self, front: Any, loop: asyncio.AbstractEventLoop, config_path: Path | None = None,
                 overrides: dict | None = None) -> None:
        super().__init__(FrontStreams(front, loop), config_path, overrides)  # type: ignore[arg-type]
        self.front = front

    def add(self, source: SourceConfig, origin: str = "api", save: bool = True) -> None:
        if source.kind == SourceKind.rtmp_listen and not getattr(self.front, "rtmp_listen_ok", False):
            raise CatalogError("RTMP listen sources are not taken by the stream API with several workers: declare "
                               "them in the config file (docs/scaling.md)")
        super().add(source, origin, save)

    def exists(self, name: str) -> bool:
        return name in self.front.placements

    def source(self, name: str) -> SourceConfig | None:
        p = self.front.placements.get(name)
        return p.source if p is not None else None

    async def describe_async(self, name: str) -> dict[str, Any] | None:
        """The single-process API's answer for one stream, its status from the worker that owns it."""
        from stream.monitor import _redact

        p = self.front.placements.get(name)
        if p is None:
            return None
        source = p.source
        status = None
        w = self.front.owner(name)
        if w is not None and w.url and self.front.session is not None:
            try:
                async with self.front.session.get(f"{w.url}/streams/{name}") as r:
                    if r.status == 200:
                        status = await r.json()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):  # a silent worker: "placing"
                status = None
        shown = source.model_dump(mode="json")
        shown["url"] = _redact(source.url)
        shown["publish_tokens"] = {k: "***" for k in source.publish_tokens}
        origin = self.origin.get(name) or ("whip" if source.kind == SourceKind.whip else "rtmp")
        return {
            "name": name, "origin": origin, "worker": p.worker, "source": shown,
            "status": _scrub(status, source.url, shown["url"]) if status is not None else {"state": "placing"},
        }

    async def list_async(self) -> list[dict[str, Any]]:
        infos = await asyncio.gather(*(self.describe_async(n) for n in sorted(self.front.placements)))
        return [i for i in infos if i is not None]


class FrontApi(StreamApi):
    """StreamApi's routes and guard; answers built from the front's placements and the owners' status."""

    def __init__(self, catalog: FrontCatalog) -> None:
        super().__init__(catalog.monitor)  # type: ignore[arg-type]
        self._catalog = catalog

    @property
    def catalog(self) -> FrontCatalog:
        return self._catalog

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": await self.catalog.list_async()})

    async def create(self, request: web.Request) -> web.Response:
        source = self._source(await self._body(request))
        try:
            await self._run(self.catalog.add, source)
        except CatalogError as exc:
            return _error(exc.status, str(exc))
        return web.json_response(await self.catalog.describe_async(source.name), status=201,
                                 headers={"Location": f"{PREFIX}/streams/{source.name}"})

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        info = await self.catalog.describe_async(name)
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
        except CatalogError as exc:
            return _error(exc.status, str(exc))
        return web.json_response(await self.catalog.describe_async(name), status=201 if created else 200)


def add_front_api_routes(app: web.Application, catalog: FrontCatalog) -> None:
    """/api/v1 and /hooks on the front, as the single-process server has them."""
    from stream.hooks import Hooks

    api = FrontApi(catalog)
    app.middlewares.append(api.guard)
    app.router.add_get(f"{PREFIX}/streams", api.list)
    app.router.add_post(f"{PREFIX}/streams", api.create)
    app.router.add_get(f"{PREFIX}/streams/{{name}}", api.get)
    app.router.add_put(f"{PREFIX}/streams/{{name}}", api.put)
    app.router.add_delete(f"{PREFIX}/streams/{{name}}", api.delete)
    app.router.add_post(f"{PREFIX}/reload", api.reload)
    hooks = Hooks(catalog.monitor, catalog)  # type: ignore[arg-type]
    app.router.add_post("/hooks/nginx/{event}", hooks.nginx)
    app.router.add_post("/hooks/srs/{event}", hooks.srs)
    app.router.add_post("/hooks/nms", hooks.nms)



