"""The front's status page: every worker's streams on one page at `/` (a stream's own page, frames and timeline
come from the worker that owns it, which renders them)."""

from __future__ import annotations

import json

from aiohttp import web

from stream.http.pages import overview_html
from stream.http.viewer import guarded, html_response
from stream.scale.front import Front


def add_front_pages(app: web.Application, front: Front) -> None:
    """`/` from the merged /streams and the workers' /sparklines (a stream's page, frames and timeline are forwarded
    to its owner by stream.scale.front_http)."""
    guard = guarded(lambda request: front.config.server)

    async def overview(request: web.Request) -> web.Response:
        streams = await front.snapshot()
        sparks: dict[str, list] = {}
        for wid, text in (await front.fetch_all("/sparklines")).items():
            sparks.update({name: s for name, s in json.loads(text).items() if front.owned_by(name, wid)})
        return html_response(overview_html(streams, sparks, front.config.server.frames))

    app.router.add_get("/", guard(overview))
