"""The stream API, reload and media-server hooks on the front: the single-process catalog over the front's placements.

A stream added by the API or a hook is placed on a worker by cost (Front.place) and started there; `persist: true`
is written to the state file by the front only (workers never see a config file or a state file), and reload
re-reads the config file in the front and applies the difference across the workers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from stream.config import SourceConfig, SourceKind
from stream.http.api import StreamApi, add_routes
from stream.http.catalog import Catalog, CatalogError, _scrub
from stream.redact import redact_options, redact_url
from stream.sources import source_type

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 12.0  # a placement's steps have their own timeouts (probe 3 s, worker 10 s)


class FrontStreams:
    """What the catalog and the hooks need of a monitor, answered by the front: adds and removes run on the front's
    event loop (the catalog calls them from an executor thread, as it does a monitor's)."""

    def __init__(self, front: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.front, self.loop = front, loop
        self.config = front.config
        self.metrics = SimpleNamespace(hook_events=front.metrics.hook_events, rtmp_rejected=front.metrics.rtmp_rejected,
                                       streams_refused=front.metrics.streams_refused)
        from stream.ingest.rtmp import RtmpListeners

        self.rtmp = RtmpListeners(self)  # type: ignore[arg-type] - the front's one nginx-rtmp per listen port
        self.listen: dict[str, SourceConfig] = {}  # named listen sources as configured; each placed as a pull
        self.closing = threading.Event()  # the front is stopping: a placement under way stops

    def _call(self, coro) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(CALL_TIMEOUT_S)
        except TimeoutError:
            fut.cancel()  # the caller is told it failed: what it started is undone (Front.place drops its placement)
            raise CatalogError(f"the front did not finish this within {CALL_TIMEOUT_S:g} s; nothing was applied, "
                               "try again shortly", 503) from None

    def add_stream(self, source: SourceConfig) -> None:
        """As Monitor.add_stream: an RTMP listen source is served by the front's nginx-rtmp, and what the workers
        get is a pull of the key from it (a named key now, an app's keys as they are published)."""
        from stream.admission import StreamExistsError
        from stream.ingest.rtmp import internal_url

        if source.name in self.front.placements or source.name in self.rtmp.by_name:
            raise StreamExistsError(f"a stream named {source.name!r} is already being watched")
        facts = source_type(source.kind)
        if facts.rtmp_listener and self.config.cluster is not None:
            from stream.ingest.rtmp import RtmpListenError

            raise RtmpListenError(f"{source.name}: RTMP listen is not served with --ray yet: the workers on other "
                                  "nodes cannot pull from the front's loopback (use workers on one machine, or a "
                                  "media server with hooks)")
        if facts.stream_per_key:
            self.rtmp.attach(source)
            return
        if not facts.rtmp_listener:
            self._place(source)
            return
        self.rtmp.attach(source)
        pull = SourceConfig(name=source.name, url=internal_url(source.url), kind=SourceKind.rtmp_pull,
                            queue_frames=source.queue_frames, options=source.options, labels=source.labels,
                            drop_policy=source.drop_policy)
        try:
            self._place(pull)
        except Exception:
            self.rtmp.detach(source.name)
            raise
        self.listen[source.name] = source

    def _place(self, source: SourceConfig) -> None:
        from stream.admission import (
            NoWorkerError,
            StreamCapError,
            StreamExistsError,
            StreamLimitError,
            StreamPlacedError,
            WorkerRefusedError,
        )

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

    def publisher_left(self, name: str, expected: bool | None = None) -> None:
        self._call(self.front.publisher_left(name, expected))

    def remove_stream(self, name: str) -> None:
        self.listen.pop(name, None)
        if self.rtmp.detach(name) and name not in self.front.placements:
            return
        self._call(self.front.remove_source(name))

    def start(self, sources: list[SourceConfig]) -> None:
        """The config's streams at start; an RTMP listen address that cannot be served stops the start, as with
        one process (RtmpListenError)."""
        from stream.ingest.rtmp import RtmpListenError

        for source in sources:
            if self.closing.is_set():
                return
            try:
                self.add_stream(source)
            except RtmpListenError:
                raise
            except Exception as exc:  # one bad stream never stops the others
                log.error("stream %r not started: %s", source.name, exc)

    def close(self) -> None:
        self.rtmp.close()


class FrontCatalog(Catalog):
    """Config, API and hook streams of the front, by origin; where each runs is the front's placement."""

    def __init__(self, front: Any, loop: asyncio.AbstractEventLoop, config_path: Path | None = None,
                 overrides: dict | None = None) -> None:
        super().__init__(FrontStreams(front, loop), config_path, overrides)  # type: ignore[arg-type]
        self.front = front

    @property
    def streams(self) -> FrontStreams:
        return self.monitor  # type: ignore[return-value]

    def exists(self, name: str) -> bool:
        return name in self.front.placements or name in self.streams.rtmp.by_name

    def source(self, name: str) -> SourceConfig | None:
        if name in self.streams.listen:
            return self.streams.listen[name]
        p = self.front.placements.get(name)
        if p is not None:
            return p.source
        return next((s for s in self.streams.rtmp.sources() if s.name == name), None)

    async def describe_async(self, name: str) -> dict[str, Any] | None:
        """The single-process API's answer for one stream, its status from the worker that owns it."""
        p = self.front.placements.get(name)
        source = self.source(name)
        if source is None:
            return None
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
        shown["url"] = redact_url(source.url)  # stream/redact.py, as /streams shows it
        shown["publish_tokens"] = {k: "***" for k in source.publish_tokens}
        shown["options"] = redact_options(source.options)
        origin = self.origin.get(name) or ("whip" if source_type(source.kind).pushed else "rtmp")
        if p is None:  # an RTMP listen app for many publishers: its keys are streams of their own
            status = {"state": "listening"}
        elif status is None:
            status = {"state": "placing"}
        else:
            status = _scrub(status, p.source.url, shown["url"])
        return {"name": name, "origin": origin, "worker": p.worker if p else None, "source": shown, "status": status}

    async def list_async(self) -> list[dict[str, Any]]:
        names = set(self.front.placements) | {s.name for s in self.streams.rtmp.sources()}
        infos = await asyncio.gather(*(self.describe_async(n) for n in sorted(names)))
        return [i for i in infos if i is not None]


class FrontApi(StreamApi):
    """StreamApi's routes and guard; answers built from the front's placements and the owners' status."""

    def __init__(self, catalog: FrontCatalog) -> None:
        super().__init__(catalog.monitor)  # type: ignore[arg-type]
        self._catalog = catalog

    @property
    def catalog(self) -> FrontCatalog:
        return self._catalog

    async def _describe(self, name: str) -> dict[str, Any] | None:
        return await self.catalog.describe_async(name)

    async def _list(self) -> list[dict[str, Any]]:
        return await self.catalog.list_async()


def add_front_api_routes(app: web.Application, catalog: FrontCatalog) -> None:
    """/api/v1 and /hooks on the front, as the single-process server has them."""
    from stream.http.hooks import Hooks

    add_routes(app, FrontApi(catalog), Hooks(catalog.monitor, catalog))  # type: ignore[arg-type]



