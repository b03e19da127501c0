"""A real Chromium opens the status pages of `fvq serve --workers 2` (the front proxies each stream's page and
frames from its worker) on the demo's looped clean and degraded samples: every stream, its score and cause are on
`/`, and the degraded stream's page shows its evidence frames, decoded at their size, and its timeline."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from benchmarks.chromium import Chromium
from tests.conftest import need
from tests.stream.test_workers import Served

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHOTS = os.environ.get("FVQ_SCREENSHOTS")  # a folder (docs/images) to keep the pages' screenshots in

ROWS = """[...document.querySelectorAll("tr.stream")].map(tr => ({
  name: tr.dataset.stream, score: tr.querySelector(".score").textContent, cause: tr.querySelector(".cause").textContent,
  thumb: (img => img && img.complete ? [img.naturalWidth, img.naturalHeight] : null)(tr.querySelector("img.thumb")),
  spark: tr.querySelectorAll("svg.spark polyline, svg.spark circle").length}))"""
EVIDENCE = """[...document.querySelectorAll(".evidence-card")].map(card => ({
  id: card.dataset.evidence, cause: card.dataset.cause,
  size: (img => img.complete ? [img.naturalWidth, img.naturalHeight] : null)(card.querySelector("img.evidence"))}))"""


def test_status_pages_in_chromium_through_two_workers(tmp_path):
    browser_binary = need("chromium")
    config = {
        "workers": 2, "worker_spares": 0,
        "sources": [{"name": n, "url": str(ROOT / "samples" / f"{n}.mp4"), "loop": True, "realtime": True}
                    for n in ("clean", "degraded")],
        "alerts": {"raise_after_s": 2},
    }
    served = Served(tmp_path, config)
    try:
        def ready() -> bool:
            streams = {s["name"]: s for s in json.loads(served.get("/streams")[1])["streams"]}
            status, body = served.get("/streams/degraded")
            if status == 404:  # the front places configured sources behind its HTTP: not placed yet
                return False
            degraded = json.loads(body)
            return (len({s.get("worker") for s in streams.values()}) == 2
                    and all((s.get("latest") or {}).get("score") is not None for s in streams.values())
                    and streams["degraded"].get("recommendation") is not None and bool(degraded["evidence"]))

        served.wait(ready, "both streams scored on two workers, the degraded one with a cause and evidence", 150)
        if SHOTS:
            time.sleep(float(os.environ.get("FVQ_SCREENSHOTS_AFTER_S", "60")))  # a timeline worth showing
        before = raised(served)
        rows, cards, series = asyncio.run(_browse(browser_binary, served.url, tmp_path))
        causes = {name: before[name] | now for name, now in raised(served).items()}  # the page was read between
    finally:
        served.stop()
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"clean", "degraded"}
    for row in by_name.values():
        assert 0 <= float(row["score"]) <= 100, row
        assert row["thumb"] == [320, 180], row  # the latest analysed frame, through the front from its worker
        assert row["spark"] >= 1, row
    assert by_name["degraded"]["cause"] in causes["degraded"]
    assert by_name["clean"]["cause"] in causes["clean"] | {"\u2013"}
    assert float(by_name["clean"]["score"]) > float(by_name["degraded"]["score"])
    assert cards and all(c["size"] == [320, 180] for c in cards), cards
    assert {c["cause"] for c in cards} <= {"stalls", "compression", "source", "camera", "framing", "low_quality"}
    assert "score" in series and "temporal" in series


def raised(served: Served) -> dict[str, set[str]]:
    """Each stream's raised causes, from /streams."""
    streams = json.loads(served.get("/streams")[1])["streams"]
    return {s["name"]: {c["cause"] for c in (s.get("recommendation") or {}).get("causes", [])} for s in streams}


async def _browse(binary: str, url: str, tmp: Path):
    out = Path(SHOTS) if SHOTS else tmp
    async with Chromium(binary) as browser:
        page = await browser.open(url + "/")
        await _settle(page, "document.querySelectorAll('img.thumb').length == 2")
        rows = await page.evaluate(ROWS)
        await page.screenshot(out / "status-page.png", full_page=False)
        stream = await browser.open(url + "/streams/degraded")
        await _settle(stream, "document.querySelectorAll('img.evidence').length >= 1")
        cards = await stream.evaluate(EVIDENCE)
        series = await stream.evaluate("[...new Set([...document.querySelectorAll('#timeline polyline')]"
                                       ".map(p => p.dataset.series))]")
        await stream.screenshot(out / "stream-page.png")
    if SHOTS:
        shutil.copy(out / "status-page.png", tmp / "status-page.png")
    return rows, cards, series


async def _settle(page, condition: str, timeout: float = 20.0) -> None:
    """Waits for `condition` and for every image on the page to have loaded (or failed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await page.evaluate(f"({condition}) && [...document.images].every(i => i.complete)"):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the page did not settle: {condition}")
