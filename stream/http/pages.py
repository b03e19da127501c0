"""The status pages as server-rendered HTML: every stream at `/`, one stream's timeline and evidence at
`/streams/{name}`; inline CSS, SVG and a few lines of JavaScript that refresh them, nothing fetched from elsewhere."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from engines.features import DIMENSIONS

DASH = "\u2013"  # what an unknown value shows
REFRESH_S = 5  # the pages fetch themselves again this often and swap their <main>
SPARK_MINUTES = 15
SPARK_POINTS = 90  # one point per 10 s over the sparkline's 15 minutes
COLOURS = {"score": "#111", "blur": "#1f77b4", "noise": "#ff7f0e", "color": "#2ca02c", "artifact": "#d62728",
           "luminance": "#9467bd", "temporal": "#8c564b"}
LEVEL_COLOURS = {"excellent": "#1a9850", "good": "#91cf60", "fair": "#fee08b", "poor": "#fc8d59", "bad": "#d73027"}

STYLE = """
body{font:14px/1.35 system-ui,sans-serif;margin:0;color:#222;background:#f6f6f6}
header{background:#222;color:#eee;padding:8px 16px}header a{color:#eee}
main{padding:12px 16px}table{border-collapse:collapse;background:#fff}
td,th{padding:4px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:middle}
th{font-weight:600;background:#fafafa}.num{text-align:right;font-variant-numeric:tabular-nums}
.level{display:inline-block;padding:1px 6px;border-radius:3px}
.state-up{color:#1a7f37}.state-down,.state-error{color:#cf222e}.low{color:#cf222e;font-weight:600}
img.thumb{width:128px;height:auto;display:block;background:#ddd}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;padding:8px;border:1px solid #ddd}
.pair{display:flex;gap:6px}.pair figure{margin:0}figcaption{font-size:12px;color:#555}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dl.facts dd{margin:0}
.legend span{margin-right:12px}.muted{color:#777}
"""

SCRIPT = """
const REFRESH_MS = REFRESH_MS_VALUE;
async function refresh() {
  try {
    const r = await fetch(location.href, {headers: {Accept: "text/html"}, credentials: "same-origin"});
    if (!r.ok) return;
    const next = new DOMParser().parseFromString(await r.text(), "text/html").querySelector("main");
    if (next) document.querySelector("main").replaceWith(next);
  } catch (err) { /* the monitor restarts or the network blinks: try again next time */ }
}
setInterval(refresh, REFRESH_MS);
""".replace("REFRESH_MS_VALUE", str(REFRESH_S * 1000))


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><header><a href="/">fvq-live</a> &middot; {_e(title)}</header><main>{body}</main>'
            f"<script>{SCRIPT}</script></body></html>")


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return DASH
    return f"{v:.{digits}f}"


def latest_dimensions(stream: dict[str, Any]) -> dict[str, float]:
    """The dimensions the causes are read from: the face's when there is one, else the frame's."""
    latest = stream.get("latest") or {}
    dims = latest.get("dimensions") or {}
    return dims.get("face") or dims.get("frame") or {}


def sparkline_svg(values: Sequence[float | None], width: int = 120, height: int = 28, lo: float = 0.0,
                  hi: float = 100.0) -> str:
    """An inline SVG polyline of `values` (None: a gap) on a fixed 0-100 scale."""
    n = len(values)
    parts: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if parts[-1]:
                parts.append([])
            continue
        x = width * i / max(n - 1, 1)
        y = height - (min(max(v, lo), hi) - lo) / (hi - lo) * height
        parts[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(f'<polyline points="{" ".join(p)}" fill="none" stroke="#333" stroke-width="1.2"/>'
                    for p in parts if len(p) > 1)
    dots = "".join(f'<circle cx="{p[0].split(",")[0]}" cy="{p[0].split(",")[1]}" r="1.2"/>'
                   for p in parts if len(p) == 1)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="score, last {SPARK_MINUTES} minutes">'
            f'<rect width="{width}" height="{height}" fill="#f3f3f3"/>{lines}{dots}</svg>')


def overview_html(streams: list[dict[str, Any]], sparks: dict[str, list], frames: bool) -> str:
    """`/`: one row per stream: state, score, level, the six dimensions, cause and action, thumbnail, sparkline."""
    heads = "".join(f'<th class="num">{d}</th>' for d in DIMENSIONS)
    rows = []
    for s in streams:
        name = s["name"]
        href = "/streams/" + quote(name, safe="")
        latest = s.get("latest") or {}
        dims = latest_dimensions(s)
        rec = s.get("recommendation") or {}
        level = latest.get("level")
        thumb = ""
        if frames and latest:
            thumb = (f'<a href="{href}"><img class="thumb" alt="{_e(name)}" '
                     f'src="{href}/frame.jpg?v={_e(latest.get("end"))}"></a>')
        cells = "".join(
            f'<td class="num dim{" low" if (v := dims.get(d)) is not None and v < 45 else ""}" data-dim="{d}">'
            f"{_fmt(v)}</td>" for d in DIMENSIONS)
        level_cell = (f'<span class="level" style="background:{LEVEL_COLOURS.get(level, "#eee")}">{_e(level)}</span>'
                      if level else DASH)
        rows.append(
            f'<tr class="stream" data-stream="{_e(name)}"><td>{thumb}</td>'
            f'<td><a class="name" href="{href}">{_e(name)}</a></td>'
            f'<td class="state state-{_e(s.get("state"))}">{_e(s.get("state"))}</td>'
            f'<td class="num score">{_fmt(latest.get("score"), 1)}</td><td>{level_cell}</td>{cells}'
            f'<td class="cause">{_e(rec.get("cause", "")) or DASH}</td>'
            f'<td class="action">{_e(rec.get("action", ""))}</td>'
            f'<td>{sparkline_svg(sparks.get(name) or [])}</td></tr>')
    if not rows:
        rows.append(f'<tr><td colspan="{8 + len(DIMENSIONS)}" class="muted">no streams yet</td></tr>')
    up = sum(1 for s in streams if s.get("state") == "up")
    body = (f'<p class="summary">{len(streams)} streams, {up} up &middot; {time.strftime("%H:%M:%S")}</p>'
            f'<table id="streams"><thead><tr><th></th><th>stream</th><th>state</th><th class="num">score</th>'
            f"<th>level</th>{heads}<th>cause</th><th>action</th><th>last {SPARK_MINUTES} min</th></tr></thead>"
            f'<tbody>{"".join(rows)}</tbody></table>')
    return page("streams", body)


def timeline_svg(tl: dict[str, list], width: int = 720, height: int = 180, span_s: float = 3600.0) -> str:
    """Score and dimensions over the last hour, one polyline each, on a 0-100 scale."""
    t = tl.get("t") or []
    columns = [tl.get(name) or [None] * len(t) for name in COLOURS]
    known = [x for i, x in enumerate(t) if any(c[i] is not None for c in columns)]
    if not known:
        return '<p class="muted">no windows yet</p>'
    end = time.time()
    span_s = min(span_s, max(60.0, end - known[0]))  # the hour, or what the stream has had of it (a minute at least)
    start = end - span_s
    lines = []
    for name, colour in COLOURS.items():
        pts, segs = [], []
        for x_t, v in zip(t, tl.get(name) or [], strict=False):
            if v is None:
                if len(pts) > 1:
                    segs.append(pts)
                pts = []
                continue
            pts.append(f"{(x_t - start) / span_s * width:.1f},{height - v / 100 * height:.1f}")
        if len(pts) > 1:
            segs.append(pts)
        width_px = 2 if name == "score" else 1
        lines += [f'<polyline class="series" data-series="{name}" points="{" ".join(p)}" fill="none" '
                  f'stroke="{colour}" stroke-width="{width_px}"/>' for p in segs]
    grid = "".join(f'<line x1="0" x2="{width}" y1="{height - g / 100 * height}" y2="{height - g / 100 * height}" '
                   f'stroke="#e5e5e5"/>' for g in (20, 40, 60, 80))
    legend = "".join(f'<span style="color:{c}">&#9632; {n}</span>' for n, c in COLOURS.items())
    return (f'<svg id="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="score and dimensions, last hour"><rect width="{width}" height="{height}" fill="#fff"/>'
            f'{grid}{"".join(lines)}</svg><div class="legend">{legend} <span class="muted">(last '
            f"{span_s / 60:.0f} min, 0-100)</span></div>")


def stream_html(s: dict[str, Any], timeline: dict[str, list] | None, frames: bool) -> str:
    """`/streams/{name}` for a browser: facts, latest and clean frames, timeline, evidence of recent causes."""
    name = s["name"]
    href = "/streams/" + quote(name, safe="")
    latest = s.get("latest") or {}
    rec = s.get("recommendation") or {}
    dims = latest_dimensions(s)
    res = s.get("resolution")
    facts = {
        "state": s.get("state"), "score": _fmt(latest.get("score"), 1), "level": latest.get("level") or "\u2013",
        "cause": rec.get("cause") or "\u2013", "action": rec.get("action") or "\u2013",
        "codec": s.get("codec") or "\u2013", "resolution": f"{res[0]}x{res[1]}" if res else "\u2013",
        "fps": _fmt(s.get("fps"), 1), "bitrate": f"{(s.get('bitrate_bps') or 0) / 1e6:.2f} Mb/s",
        "kind": s.get("kind"), "worker": s.get("worker"),
    }
    facts.update({d: _fmt(dims.get(d)) for d in DIMENSIONS})
    dl = "".join(f'<dt>{k}</dt><dd class="fact" data-fact="{k}">{_e(v)}</dd>' for k, v in facts.items()
                 if v is not None)
    parts = [f'<h1 data-stream="{_e(name)}">{_e(name)}</h1><div class="cards"><div class="card"><dl class="facts">'
             f"{dl}</dl></div>"]
    info = s.get("frames") or {}
    if frames and info.get("latest"):
        clean = (f'<figure><img class="clean" alt="last clean frame" src="{href}/clean.jpg?v={info.get("clean_at")}">'
                 "<figcaption>last clean frame</figcaption></figure>" if info.get("clean") else "")
        parts.append(f'<div class="card pair"><figure><img class="latest" alt="latest frame" '
                     f'src="{href}/frame.jpg?v={info.get("latest_at")}"><figcaption>latest analysed frame'
                     f"</figcaption></figure>{clean}</div>")
    parts.append("</div><h2>Timeline</h2>" + timeline_svg(timeline or {}))
    evidence = s.get("evidence") or []
    parts.append("<h2>Evidence of recent causes</h2>")
    if not frames:
        parts.append('<p class="muted">frames are off (server.frames: false)</p>')
    elif not evidence:
        parts.append('<p class="muted">no cause raised yet</p>')
    cards = []
    for ev in evidence if frames else []:
        when = time.strftime("%H:%M:%S", time.localtime(ev["time"]))
        dim_text = " ".join(f"{k} {v:.0f}" for k, v in ev["dimensions"].items())
        clean = (f'<figure><img class="evidence-clean" alt="clean" src="{_e(ev["clean_url"])}">'
                 "<figcaption>last clean frame before</figcaption></figure>" if ev.get("clean_url") else "")
        cards.append(
            f'<div class="card evidence-card" data-evidence="{_e(ev["id"])}" data-cause="{_e(ev["cause"])}">'
            f'<div class="pair"><figure><img class="evidence" alt="{_e(ev["cause"])}" src="{_e(ev["url"])}" '
            f'width="{ev["size"][0]}" height="{ev["size"][1]}"><figcaption><b class="ev-cause">{_e(ev["cause"])}'
            f'</b> {_e(ev.get("family") or "")} {ev["value"]:.0f} at {when}, score '
            f'<span class="ev-score">{_fmt(ev.get("score"), 1)}</span></figcaption></figure>{clean}</div>'
            f'<div class="muted">{_e(dim_text)}</div></div>')
    parts.append(f'<div class="cards">{"".join(cards)}</div>')
    return page(name, "".join(parts))
