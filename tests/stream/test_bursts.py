"""Bursts of stream API calls and media-server hooks against `fvq serve` with workers: every caller answered in
seconds, every stream scored, a FIFO source refused at once."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import make_face_clip
from tests.stream.test_workers import Served, windows

pytestmark = pytest.mark.slow  # end to end: workers, many streams or a real Prometheus

BURST = 50
ANSWER_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def tiny_clip(media_dir: Path) -> Path:
    """3 s at 160x90, 5 fps: a hundred of them scored on two shared cores."""
    return make_face_clip(media_dir / "tiny5.mp4", seconds=3.0, size="160x90", fps=5,
                          codec_args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "10"))


async def _timed(session: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, float, str]:
    t0 = time.monotonic()
    async with session.request(method, url, **kw) as r:
        text = await r.text()
        return r.status, time.monotonic() - t0, text


async def _burst(calls) -> list[tuple[int, float, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        return await asyncio.gather(*(_timed(session, *c[:2], **c[2]) for c in calls))


def test_fifty_api_posts_and_fifty_nginx_hooks_at_once_through_the_front(tmp_path: Path, tiny_clip: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for i in range(BURST):
        (media / f"k{i}.mp4").symlink_to(tiny_clip)
    config = {
        "window": {"length_s": 1.0, "hop_s": 0.5}, "no_model": True,
        # the files are paced as live: a window the loaded host analyses late is skipped, not here
        "analysis": {"max_lag_s": 60}, "workers": 2, "worker_spares": 0,
        "limits": {"max_streams": 2 * BURST + 1},
        "hooks": {"pull_url": str(media) + "/{name}.mp4"},
        "sources": [{"name": "first", "url": str(tiny_clip)}],
    }
    served = Served(tmp_path, config)
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front to be ready", 120)
        # a FIFO as a file source: refused at once with its reason, and the API is not held by it
        fifo = tmp_path / "pipe.mp4"
        os.mkfifo(fifo)
        [(status, took, text)] = asyncio.run(_burst([("POST", served.url + "/api/v1/streams",
                                                      {"json": {"name": "fifo", "url": str(fifo)}})]))
        assert status == 400 and "FIFO" in text, text
        assert took < 1.0, took
        # 50 POSTs at once (the default executor has 6 threads on 2 cores: this hung every caller for 60 s)
        results = asyncio.run(_burst([
            ("POST", served.url + "/api/v1/streams", {"json": {"name": f"api{i}", "url": str(tiny_clip)}})
            for i in range(BURST)]))
        latencies = sorted(t for _, t, _ in results)
        print(f"\n{BURST} concurrent API POSTs: statuses {sorted({s for s, _, _ in results})}, latency "
              f"median {latencies[BURST // 2]:.2f} s, max {latencies[-1]:.2f} s")
        assert all(t < ANSWER_WITHIN_S for t in latencies), latencies
        assert [s for s, _, _ in results] == [201] * BURST, [(s, text) for s, _, text in results if s != 201][:3]
        # 50 nginx-rtmp on_publish notifications at once, form-encoded as nginx sends them
        results = asyncio.run(_burst([
            ("POST", served.url + "/hooks/nginx/on_publish",
             {"data": {"call": "publish", "app": "live", "name": f"k{i}", "addr": "127.0.0.1", "type": "live",
                       "tcurl": "rtmp://127.0.0.1:1935/live"}})
            for i in range(BURST)]))
        latencies = sorted(t for _, t, _ in results)
        print(f"{BURST} concurrent nginx on_publish hooks: latency median {latencies[BURST // 2]:.2f} s, "
              f"max {latencies[-1]:.2f} s")
        assert [s for s, _, _ in results] == [200] * BURST
        assert all(t < ANSWER_WITHIN_S for t in latencies), latencies
        names = [f"api{i}" for i in range(BURST)] + [f"k{i}" for i in range(BURST)]

        scored: set[str] = set()

        def all_scored() -> bool:
            samples = served.samples()
            scored.update(n for n in names if (windows(samples, n) or 0) > 0)
            return scored == set(names)

        try:
            served.wait(all_scored, "every stream of both bursts to publish a window", 180)
        except AssertionError:
            raise AssertionError(f"never scored: {sorted(set(names) - scored)}") from None
        samples = served.samples()
        refused = [v for n, labels, v in samples if n == "fvq_hook_events_total" and labels["result"] != "added"]
        assert not any(refused), [(labels, v) for n, labels, v in samples if n == "fvq_hook_events_total"]
        # the 101 files have ended and wait out their retention, still listed: they hold no slot under the cap (101)
        def all_ended() -> bool:
            states = {s["name"]: s["state"] for s in json.loads(served.get("/streams")[1])["streams"]}
            return len(states) == 2 * BURST + 1 and set(states.values()) == {"ended"}

        served.wait(all_ended, "every file to end", 60)
        [(status, _, text)] = asyncio.run(_burst([("POST", served.url + "/api/v1/streams",
                                                   {"json": {"name": "one-more", "url": str(tiny_clip)}})]))
        assert status == 201, text
        # JSON nested past the bound: 400 from the API, success from the hooks (as documented), never a 500
        deep = "[" * 30_000 + "]" * 30_000  # under the 64 KiB body limit, far past Python's recursion limit
        results = asyncio.run(_burst([
            ("POST", served.url + "/api/v1/streams", {"data": deep, "headers": {"Content-Type": "application/json"}}),
            ("POST", served.url + "/hooks/nms", {"data": deep}),
            ("POST", served.url + "/hooks/srs/on_publish", {"data": deep})]))
        assert [s for s, _, _ in results] == [400, 200, 200], results
        assert "deeper than 32" in results[0][2]
        assert "Traceback" not in served.tail()
    finally:
        served.stop()
