"""Media-server hooks: nginx-rtmp and SRS tell the monitor when a stream is published; it pulls it while live."""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web
from pydantic import ValidationError

from stream.config import HooksConfig, SourceConfig
from stream.http.access import authorized
from stream.http.catalog import Catalog, CatalogError, catalog_for
from stream.http.control import ControlLane, LaneBusyError, json_depth_exceeded
from stream.live.monitor import Monitor

log = logging.getLogger(__name__)

SRS_OK = {"code": 0}  # SRS takes code 0 as "allow"; anything else would refuse the publisher
HOOK_QUEUE = 1024  # notifications waiting at most; past it one is counted `busy` and not followed
HOOK_WAIT_S = 3.0  # a notification is answered when followed or after this long (it is followed all the same)


def _json_object(raw: bytes) -> dict:
    """A hook's JSON body as a dict; anything else (not JSON, nested too deep, not an object) is {}."""
    try:
        text = raw.decode("utf-8")
        body = None if json_depth_exceeded(text) else json.loads(text)
    except (ValueError, RecursionError):
        body = None
    return body if isinstance(body, dict) else {}


def map_publish(hooks: HooksConfig, fields: dict[str, str]) -> SourceConfig | None:
    """The source the monitor pulls for a publish notification, from the config's templates; None when the app is
    not followed. Raises ValueError (a template gave an invalid name, URL or label)."""
    app = fields.get("app", "")
    if not fields.get("name") or not app:
        raise ValueError("the notification names no app and stream")
    if hooks.apps and app not in hooks.apps:
        return None
    values = {k: fields.get(k, "") for k in ("app", "name", "addr", "vhost")}
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", hooks.stream_name.format(**values))[:64].lstrip("_.-")
    try:
        return SourceConfig(
            name=name or "stream", url=hooks.pull_url.format(**values),
            labels={k: v.format(**values) for k, v in hooks.labels.items()}, expected=hooks.expected,
        )
    except ValidationError as exc:
        raise ValueError(str(exc).splitlines()[-1] if exc.errors() else str(exc)) from None


def _fields(raw: dict) -> dict[str, str]:
    """nginx-rtmp sends `name`, `addr`, `app`; SRS `stream`, `ip`, `app`, `vhost`; node-media-server `name`, `ip`,
    `app`. One set of names."""
    out = {k: str(v) for k, v in raw.items() if isinstance(v, str | int | float)}
    out.setdefault("name", out.get("stream", ""))
    out.setdefault("addr", out.get("ip", ""))
    out["name"] = out["name"].split("?", 1)[0]
    out["app"] = out.get("app", "").split("?", 1)[0]
    return out


class Hooks:
    """Each handler answers so that publishing goes on whatever the monitor makes of the notification: a stream
    it cannot follow (stream cap, name taken, bad template, wrong token) is logged and counted, never refused."""

    def __init__(self, monitor: Monitor, catalog: Catalog | None = None) -> None:
        self.monitor = monitor
        self.catalog = catalog  # the front's (several workers); else the monitor's own
        # notifications are followed one at a time, in the order they came, on a thread no other work uses
        self.lane = ControlLane("hook", threads=1, max_queued=HOOK_QUEUE, start_within_s=HOOK_WAIT_S)

    def follow(self, server: str, event: str, fields: dict[str, str]) -> str:
        """Adds or removes the stream of a notification; returns the result counted."""
        catalog = self.catalog or catalog_for(self.monitor)
        try:
            source = map_publish(self.monitor.config.hooks, fields)
        except (ValueError, KeyError) as exc:
            log.warning("%s hook %s for %s/%s: %s", server, event, fields.get("app"), fields.get("name"), exc)
            return "error"
        if source is None:
            return "ignored"
        if event == "unpublish":
            if catalog.origin.get(source.name) != "hook":
                return "ignored"
            if self.monitor.config.hooks.expected:  # stays listed, `down`, until its publisher is back
                catalog.monitor.publisher_left(source.name, True)
                return "down"
            catalog.remove(source.name)
            return "removed"
        try:
            if catalog.origin.get(source.name) == "hook" and catalog.exists(source.name):
                catalog.remove(source.name)  # a publisher that came back before its unpublish arrived
            catalog.add(source, "hook")
        except CatalogError as exc:
            log.warning("%s hook: stream %s not followed: %s", server, source.name, exc)
            return "refused"
        log.info("%s hook: following %s as stream %s", server, fields.get("name"), source.name)
        return "added"

    async def _handle(self, request: web.Request, server: str, event: str, fields: dict[str, str]) -> None:
        metrics = self.monitor.metrics
        why = authorized(request, self.monitor.config.server.api_token, allow_query=True)
        if why is not None:
            log.warning("%s hook from %s ignored: %s", server, request.remote, why)
            metrics.hook_events.labels(server, event, "unauthorized").inc()
            return
        def follow_and_count() -> None:
            try:
                result = self.follow(server, event, fields)
            except Exception:  # never let the monitor refuse a publisher
                log.exception("%s hook %s failed", server, event)
                result = "error"
            metrics.hook_events.labels(server, event, result).inc()

        try:
            await self.lane.run_detached(follow_and_count, wait_s=HOOK_WAIT_S)
        except LaneBusyError as exc:
            log.warning("%s hook %s for %s/%s not followed: %s", server, event, fields.get("app"), fields.get("name"),
                        exc)
            metrics.hook_events.labels(server, event, "busy").inc()

    async def nginx(self, request: web.Request) -> web.Response:
        """nginx-rtmp `on_publish` / `on_publish_done` (form-encoded; 2xx lets the publisher go on)."""
        call = request.match_info["event"]
        event = {"on_publish": "publish", "on_publish_done": "unpublish"}.get(call)
        if event is None:
            raise web.HTTPNotFound(text="nginx hooks are /hooks/nginx/on_publish and /hooks/nginx/on_publish_done\n")
        try:
            form = dict(await request.post())
        except Exception:
            form = {}
        await self._handle(request, "nginx", event, _fields(form))
        return web.Response(text="ok\n")

    async def srs(self, request: web.Request) -> web.Response:
        """SRS `http_hooks` `on_publish` / `on_unpublish` (JSON; answers {"code": 0})."""
        call = request.match_info["event"]
        event = {"on_publish": "publish", "on_unpublish": "unpublish"}.get(call)
        if event is None:
            raise web.HTTPNotFound(text="SRS hooks are /hooks/srs/on_publish and /hooks/srs/on_unpublish\n")
        await self._handle(request, "srs", event, _fields(_json_object(await request.read())))
        return web.json_response(SRS_OK)


    async def nms(self, request: web.Request) -> web.Response:
        """node-media-server (v4) `notify.url`: JSON with `action` postPublish/donePublish, sent without waiting;
        any answer but 200 would make it close the session, so every notification is answered 200."""
        body = _json_object(await request.read())
        event = {"postPublish": "publish", "donePublish": "unpublish"}.get(str(body.get("action")))
        if event is not None:  # play and record notifications (the monitor's own pulls among them) are not ours
            await self._handle(request, "nms", event, _fields(body))
        return web.Response(text="ok\n")
