"""The routes people look at: the status pages (`/`, `/streams/{name}` for a browser) and the frames (latest, clean,
evidence), behind the API's access rules plus a read-only viewer token; JSON views (stream, timeline, sparklines)."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote

from aiohttp import web

from stream.config import ServerConfig
from stream.http.access import is_loopback
from stream.http.pages import SPARK_MINUTES, SPARK_POINTS, overview_html, stream_html
from stream.live.monitor import Monitor

VIEWER_COOKIE = "fvq_viewer"
FRAMES_OFF = "frames are off on this monitor (server.frames: false)\n"
JPEG_HEADERS = {"Content-Type": "image/jpeg", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# the pages load nothing from elsewhere: their own frames, inline style and script
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"}


def _given_token(request: web.Request) -> tuple[str, bool]:
    """(the token the request carries, whether it came in the query): bearer header, `?token=`, or the cookie."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    if request.query.get("token"):
        return request.query["token"], True
    return request.cookies.get(VIEWER_COOKIE, ""), False


def _forwarded(request: web.Request) -> tuple[bool, str | None]:
    """Behind the front (a worker): (the front's token is on the request, the client address the front names)."""
    from stream.http.whip import WHIP_KEY

    whip = request.app.get(WHIP_KEY)
    forwarder = getattr(whip, "forwarder", None)
    if forwarder is None:
        return False, None
    token_header, client_header, token = forwarder
    given = request.headers.get(token_header, "")
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return True, request.headers.get(client_header)
    return False, None


def viewer_refusal(request: web.Request, server: ServerConfig) -> tuple[int, str] | None:
    """None when the request may see pages and frames, else (status, why). The API's rules: with no token set,
    loopback clients only; with `server.api_token` or `server.viewer_token` set, a request must carry one of them
    (`Authorization: Bearer`, `?token=`, or the cookie a page sets). A worker judges the client the front names."""
    from_front, named = _forwarded(request)
    if from_front and named is None:
        return None  # the front's own request (its status page's views)
    client = named if from_front else request.remote
    tokens = [t for t in (server.api_token, server.viewer_token) if t]
    if not tokens:
        if is_loopback(client):
            return None
        return 403, ("no server.api_token or server.viewer_token is set, so only loopback clients see the pages "
                     "and frames")
    given, _ = _given_token(request)
    if given and any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
        return None
    if given:
        return 401, "the token is wrong"
    return 401, "send `Authorization: Bearer <server.viewer_token>`, or open the page once with ?token=<token>"


def _refused(status: int, why: str) -> web.Response:
    response = web.Response(status=status, text=why + "\n")
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def guarded(server_of):
    """Decorates a handler with viewer_refusal; `server_of(request)` gives the ServerConfig. A token that came in
    the query is kept in an HttpOnly, same-site cookie, so the page's frames and refreshes carry it."""
    def wrap(handler):
        async def checked(request: web.Request) -> web.StreamResponse:
            server = server_of(request)
            refused = viewer_refusal(request, server)
            if refused is not None:
                return _refused(*refused)
            response = await handler(request)
            given, in_query = _given_token(request)
            if in_query and given:
                response.set_cookie(VIEWER_COOKIE, given, httponly=True, samesite="Strict", path="/")
            return response
        return checked
    return wrap


def wants_html(request: web.Request) -> bool:
    """A browser's navigation (Accept names text/html before JSON), or `?format=html`."""
    fmt = request.query.get("format")
    if fmt in ("html", "json"):
        return fmt == "html"
    accept = request.headers.get("Accept", "")
    page, data = accept.find("text/html"), accept.find("application/json")
    return page >= 0 and (data < 0 or page < data)


def html_response(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


class Viewer:
    """The monitor's pages, frames and their JSON."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    @property
    def frames(self) -> bool:
        return self.monitor.config.server.frames

    def describe(self, name: str) -> dict[str, Any] | None:
        """The stream's /streams entry, with its frames' URLs and evidence list."""
        stream = self.monitor.streams.get(name)
        if stream is None:
            return None
        out = stream.state.to_json()
        out.update(self.monitor.evidence.describe(name, "/streams/" + quote(name, safe="")))
        if not self.frames:
            out["frames"] = None
        return out

    def sparklines(self) -> dict[str, list]:
        ev = self.monitor.evidence
        return {name: ev.spark(name, SPARK_MINUTES * 60, SPARK_POINTS) for name in list(self.monitor.streams)}

    async def stream(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["stream"]
        if wants_html(request):
            return await self._stream_page(request)
        info = self.describe(name)
        if info is None:
            raise web.HTTPNotFound(text=f"no stream named {name!r}\n")
        return web.json_response(info)

    async def _stream_page(self, request: web.Request) -> web.StreamResponse:
        refused = viewer_refusal(request, self.monitor.config.server)
        if refused is not None:
            return _refused(*refused)
        name = request.match_info["stream"]
        info = self.describe(name)
        if info is None:
            raise web.HTTPNotFound(text=f"no stream named {name!r}\n")
        # the hour in 720 spans of 5 s: a point per pixel of the chart
        response = html_response(stream_html(info, self.monitor.evidence.timeline(name, 3600, 720), self.frames))
        given, in_query = _given_token(request)
        if in_query and given:
            response.set_cookie(VIEWER_COOKIE, given, httponly=True, samesite="Strict", path="/")
        return response

    async def overview(self, request: web.Request) -> web.Response:
        return html_response(overview_html(self.monitor.snapshot(), self.sparklines(), self.frames))

    async def sparklines_json(self, request: web.Request) -> web.Response:
        return web.json_response(self.sparklines())

    async def timeline(self, request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        tl = self.monitor.evidence.timeline(name, float(request.query.get("seconds", 3600)))
        if name not in self.monitor.streams or tl is None:
            raise web.HTTPNotFound(text=f"no timeline for a stream named {name!r}\n")
        return web.json_response(tl)

    def _jpeg(self, name: str, body: bytes | None, what: str) -> web.Response:
        if not self.frames:
            raise web.HTTPNotFound(text=FRAMES_OFF)
        if body is None:
            raise web.HTTPNotFound(text=f"stream {name!r} has no {what} (yet)\n")
        return web.Response(body=body, headers=JPEG_HEADERS)

    async def latest_frame(self, request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        return self._jpeg(name, self.monitor.evidence.latest_jpeg(name), "analysed frame")

    async def clean_frame(self, request: web.Request) -> web.Response:
        name = request.match_info["stream"]
        return self._jpeg(name, self.monitor.evidence.clean_jpeg(name), "clean frame")

    async def evidence_frame(self, request: web.Request) -> web.Response:
        name, ident = request.match_info["stream"], request.match_info["id"]
        return self._jpeg(name, self.monitor.evidence.evidence_jpeg(name, ident), f"evidence frame {ident!r}")


def add_viewer_routes(app: web.Application, monitor: Monitor) -> None:
    """`/`, `/streams/{name}` (HTML for a browser, JSON otherwise), its frames, timeline, and `/sparklines`."""
    viewer = Viewer(monitor)
    guard = guarded(lambda request: monitor.config.server)
    app.router.add_get("/", guard(viewer.overview))
    app.router.add_get("/sparklines", viewer.sparklines_json)
    app.router.add_get("/streams/{stream}", viewer.stream)
    app.router.add_get("/streams/{stream}/timeline", viewer.timeline)
    app.router.add_get("/streams/{stream}/frame.jpg", guard(viewer.latest_frame))
    app.router.add_get("/streams/{stream}/clean.jpg", guard(viewer.clean_frame))
    app.router.add_get("/streams/{stream}/evidence/{id}.jpg", guard(viewer.evidence_frame))
