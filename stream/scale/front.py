"""The front: places streams on workers by measured load, keeps them there, and serves the public HTTP for all of them.

It owns no stream. Every half second (and at once when a worker changes) it reconciles what each worker holds
with the placement: a worker that came back empty (restarted) gets its streams again, a stream that moved is
removed from its old worker. `/metrics` merges the workers' expositions (a stream's series only from the worker
that owns it, so none appears twice; a worker's own series get a `worker` label) with the front's `fvq_worker_*`
series; `/streams` merges their snapshots; per-stream paths (`/streams/{stream}`, WHIP, and any route added with
`add_owner_routes`) are forwarded to the stream's owner; `/sd` lists the workers for Prometheus `http_sd`. The
stream API, reload, media-server hooks and RTMP listen are the front's own (stream/scale/front_api.py): what they create
is placed here like a config stream. Its HTTP app is stream/scale/front_http.py, its /metrics merge stream/scale/front_metrics.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import aiohttp

from stream.admission import NoWorkerError, StreamCapError, StreamPlacedError, WorkerRefusedError
from stream.config import MonitorConfig, SourceConfig
from stream.http.control import ControlLane, LaneBusyError
from stream.redact import redact_url
from stream.scale.front_metrics import FrontMetrics, front_exposition
from stream.scale.placement import (
    HANG_S,
    PROBE_TIMEOUT_S,
    REFERENCE_COST,
    REFERENCE_PIXEL_RATE,
    TICK_S,
    WHIP_GRACE_S,
    Placement,
    Pool,
    Worker,
    probe_pixel_rate,
)
from stream.scale.workers import TOKEN_HEADER

log = logging.getLogger(__name__)

class Front:
    """Placement, reconciliation and the merged views, over a pool of workers reached by HTTP."""

    def __init__(self, config: MonitorConfig, pool: Pool, token: str) -> None:
        self.config, self.pool, self.token = config, pool, token
        self.metrics = FrontMetrics()
        self.placements: dict[str, Placement] = {}
        self.loads: dict[str, dict[str, Any]] = {}  # last /worker/load of each worker
        self.last_ok: dict[str, float] = {}
        self.cpu_rate: dict[str, float] = {}
        self.known: set[str] = set()
        self._restarts_seen: dict[str, int] = {}
        self.cost_per_pixel = REFERENCE_COST / REFERENCE_PIXEL_RATE
        self.session: aiohttp.ClientSession | None = None
        self.wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._probes = ControlLane("source probe", threads=2, max_queued=16, start_within_s=PROBE_TIMEOUT_S)

    # lifecycle
    async def start(self, sources: Iterable[SourceConfig] = ()) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        await self.reconcile()
        for source in sources:
            await self.add_source(source)
        await self.reconcile()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self.session is not None:
            await self.session.close()
        self._probes.close()

    def poke(self) -> None:
        """Reconcile now (thread-safe when called through loop.call_soon_threadsafe)."""
        self.wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), TICK_S)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("front: reconciliation failed")

    # placement
    def estimate(self, source: SourceConfig) -> float:
        pixels = probe_pixel_rate(source) or REFERENCE_PIXEL_RATE
        return pixels * self.cost_per_pixel

    async def estimate_soon(self, source: SourceConfig) -> float:
        """The estimate, probed on the probe lane (threads no other work holds) within PROBE_TIMEOUT_S; the
        reference cost when the probe is slow or the lane busy (the measured cost replaces it soon after)."""
        try:
            return await asyncio.wait_for(self._probes.run(self.estimate, source), PROBE_TIMEOUT_S)
        except (TimeoutError, LaneBusyError):
            log.warning("front: the cost of stream %s was not probed within %g s: placed at the reference cost",
                        source.name, PROBE_TIMEOUT_S)
            return REFERENCE_PIXEL_RATE * self.cost_per_pixel

    def worker_loads(self, live: Iterable[str]) -> dict[str, float]:
        loads = {wid: 0.0 for wid in live}
        for p in self.placements.values():
            if p.worker in loads:
                loads[p.worker] += p.cost
        return loads

    def choose(self, cost: float, exclude: set[str] = frozenset()) -> str:
        live = {wid: w for wid, w in self.pool.workers().items() if wid not in exclude and self._answering(wid)}
        if not live:
            raise NoWorkerError("no worker is up to take the stream; try again shortly")
        loads = self.worker_loads(live)
        return min(live, key=lambda wid: ((loads[wid] + cost) / max(live[wid].capacity, 1e-6), wid))

    def _answering(self, wid: str) -> bool:
        return wid in self.last_ok

    async def add_source(self, source: SourceConfig, pushed: bool = False, start: bool = True) -> Placement:
        """Places a stream (a config/CLI source, or a WHIP publisher's) on the least loaded worker."""
        cost = await self.estimate_soon(source) if not pushed else REFERENCE_PIXEL_RATE * self.cost_per_pixel
        if source.name in self.placements:
            raise StreamPlacedError(f"a stream named {source.name!r} is already being watched")
        active = sum(1 for p in self.placements.values() if not p.ended)  # ended ones wait out their retention
        if active >= self.config.limits.max_streams:
            self.metrics.streams_refused.labels("limit").inc()
            raise StreamCapError(
                f"the monitor already holds {active} streams (limits.max_streams={self.config.limits.max_streams})")
        wid = self.choose(cost)
        p = Placement(source, wid, cost, pushed, time.time())
        self.placements[source.name] = p
        self.metrics.placement.labels(source.name, wid).set(1)
        self.metrics.lost.labels(source.name)  # 0 from the start
        log.info("front: stream %s placed on worker %s (cost %.3f CPU-s/s)", source.name, wid, cost)
        if not pushed and start:
            await self._add_on(wid, p)
        return p

    async def place(self, source: SourceConfig) -> Placement:
        """A stream from the stream API or a hook: placed by cost and started on its worker now, so that a source
        the worker refuses (400) is an error to the caller, not a placement retried forever."""
        p = await self.add_source(source, start=False)  # placed; started below, where the answer is kept
        w = self.pool.workers().get(p.worker)
        if w is None or not w.url or self.session is None:
            return p  # the worker is restarting: reconciliation starts it there
        try:
            async with self.session.post(w.url + "/worker/streams", json=source.model_dump(mode="json"),
                                         headers={TOKEN_HEADER: self.token},
                                         timeout=aiohttp.ClientTimeout(total=10.0)) as r:
                if r.status in (201, 409):
                    log.info("front: stream %s started on worker %s", source.name, p.worker)
                    return p
                text = (await r.text()).strip()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return p  # reconciliation retries
        except asyncio.CancelledError:  # its caller gave up and was told so: nothing stays applied
            self._drop(p, "its caller timed out")
            raise
        self._drop(p, f"worker {p.worker} refused it ({r.status}): {text}")
        raise WorkerRefusedError(text, 429 if r.status == 503 else 400)

    async def publisher_left(self, name: str, expected: bool | None) -> None:
        """The publisher of a stream the front's RTMP listen or a hook feeds left: its worker marks it."""
        p = self.placements.get(name)
        w = self.owner(name)
        if p is None or w is None:
            return
        p.ended = not (expected if expected is not None else p.source.expected)
        await self._request("POST", w, f"/worker/streams/{name}/left", {"expected": expected})

    async def remove_source(self, name: str) -> None:
        p = self.placements.pop(name, None)
        if p is None:
            return
        self.metrics.forget_stream(name)
        w = self.pool.workers().get(p.worker)
        if w is not None and w.url:
            await self._request("DELETE", w, f"/worker/streams/{name}")

    def _move(self, p: Placement, to: str, reason: str) -> None:
        self.metrics.placement.remove(p.source.name, p.worker)
        log.warning("front: stream %s moves from worker %s to %s (%s)", p.source.name, p.worker, to, reason)
        p.worker, p.held = to, False
        p.gap_since = p.gap_since or p.last_window or time.time()
        self.metrics.placement.labels(p.source.name, to).set(1)
        self.metrics.moves.labels(reason).inc()

    # reconciliation
    async def reconcile(self) -> None:
        async with self._lock:
            await self._reconcile()

    async def _reconcile(self) -> None:
        now = time.time()
        workers = self.pool.workers()
        results = await asyncio.gather(*(self._request("GET", w, "/worker/load") for w in workers.values()))
        for wid, load in zip(workers, results, strict=True):
            if load is None:
                continue
            prev = self.loads.get(wid)
            if prev is not None and prev.get("incarnation") == load["incarnation"]:
                dt = now - self.last_ok.get(wid, now)
                if dt > 0.2:
                    self.cpu_rate[wid] = max(0.0, (load["cpu_s"] - prev["cpu_s"]) / dt)
            elif prev is not None:
                self.cpu_rate.pop(wid, None)
            self.loads[wid] = load
            self.last_ok[wid] = now
        # workers gone from the pool, or silent
        fail_after = self.config.cluster.failover_after_s if self.config.cluster else HANG_S
        for wid in list(self.last_ok):
            gone = wid not in workers
            silent = now - self.last_ok[wid] > fail_after
            if not (gone or silent):
                continue
            if silent and not gone and not self.pool.reassign_lost:
                log.error("front: worker %s has not answered for %.0f s: killing it (it is restarted)", wid,
                          now - self.last_ok[wid])
                self.pool.kill(wid)
            if gone or self.pool.reassign_lost:
                if self.pool.reassign_lost:
                    self.known.discard(wid)  # when it answers again (a restarted actor) it is a joining worker
                self.last_ok.pop(wid, None)
                self.loads.pop(wid, None)
                self.metrics.up.labels(wid).set(0)
        for wid, w in workers.items():
            self.metrics.up.labels(wid).set(1 if wid in self.last_ok else 0)
            self.metrics.restarts.labels(wid)  # 0 from the start
            counted = self._restarts_seen.get(wid, 0)
            if w.restarts > counted:
                self.metrics.restarts.labels(wid).inc(w.restarts - counted)
            self._restarts_seen[wid] = w.restarts
        for wid in list(self._restarts_seen):  # a worker gone for good (its node left): its series go too
            if wid not in getattr(self.pool, "slots", workers):
                self.metrics.forget_worker(wid)
                self._restarts_seen.pop(wid, None)
                self.cpu_rate.pop(wid, None)
        joined = [wid for wid in self.last_ok if wid not in self.known]
        self.known |= set(self.last_ok)
        if self.pool.reassign_lost:
            self._reassign_lost()
            if joined and len(self.known) > len(joined):
                self._rebalance(joined)
        self._measure(now)
        await self._converge(workers, now)
        loads = self.worker_loads(workers)
        for wid in workers:
            self.metrics.streams.labels(wid).set(sum(1 for p in self.placements.values() if p.worker == wid))
            self.metrics.load.labels(wid).set(loads.get(wid, 0.0))
            self.metrics.cpu.labels(wid).set(self.cpu_rate.get(wid, 0.0))

    def _reassign_lost(self) -> None:
        for p in list(self.placements.values()):
            if p.worker in self.last_ok:
                continue
            if p.pushed:  # a WHIP publisher's connection died with its worker: it publishes again to the front
                self._drop(p, "its worker was lost")
                continue
            try:
                self._move(p, self.choose(p.cost), "lost")
            except NoWorkerError:
                pass  # every worker is down: placed when one answers

    def _rebalance(self, joined: list[str]) -> None:
        """A worker joined: move pulled streams to it from the most loaded workers while that lowers the
        highest load (a move costs the stream a few seconds of windows, so only then)."""
        workers = self.pool.workers()
        cap = {wid: max(workers[wid].capacity, 1e-6) for wid in self.last_ok if wid in workers}
        while True:
            loads = self.worker_loads(cap)
            src = max(cap, key=lambda w: loads[w] / cap[w])
            dst = min(joined, key=lambda w: loads[w] / cap[w])
            movable = sorted((p for p in self.placements.values() if p.worker == src and not p.pushed),
                             key=lambda p: p.cost)
            if not movable:
                return
            p = movable[0]
            if (loads[dst] + p.cost) / cap[dst] >= loads[src] / cap[src]:
                return
            self._move(p, dst, "rebalance")

    def _measure(self, now: float) -> None:
        """Each stream's cost: its worker's CPU rate shared among its streams by pixel rate."""
        total_cpu = total_pixels = 0.0
        for wid, load in self.loads.items():
            streams = {n: s for n, s in load["streams"].items()
                       if n in self.placements and self.placements[n].worker == wid}
            pixels = sum(s["pixels_per_s"] for s in streams.values())
            rate = self.cpu_rate.get(wid)
            if rate is None or pixels <= 0:
                continue
            total_cpu, total_pixels = total_cpu + rate, total_pixels + pixels
            for n, s in streams.items():
                p = self.placements[n]
                p.cost = 0.7 * p.cost + 0.3 * rate * s["pixels_per_s"] / pixels
        if total_pixels > 0:
            self.cost_per_pixel = 0.8 * self.cost_per_pixel + 0.2 * total_cpu / total_pixels

    async def _converge(self, workers: dict[str, Worker], now: float) -> None:
        jobs = []
        for wid, load in self.loads.items():
            w = workers.get(wid)
            if w is None:
                continue
            held = load["streams"]
            for name, p in list(self.placements.items()):
                if p.worker != wid:
                    continue
                if name in held:
                    self._seen(p, held[name], load["incarnation"])
                elif p.held and p.ended and p.incarnation == load["incarnation"]:
                    self._drop(p, "it ended and its worker retired it after limits.ended_retention_s")
                elif p.pushed:
                    if p.held or now - p.placed_at > WHIP_GRACE_S:
                        self._drop(p, "its WHIP session ended with its worker")
                else:
                    if p.held:
                        p.held = False
                        p.gap_since = p.gap_since or p.last_window or now
                    jobs.append(self._add_on(wid, p))
            for name in held:
                p = self.placements.get(name)
                if p is None or p.worker != wid:
                    jobs.append(self._request("DELETE", w, f"/worker/streams/{name}"))
        if jobs:
            await asyncio.gather(*jobs)

    def _seen(self, p: Placement, s: dict[str, Any], incarnation: str) -> None:
        if p.incarnation is not None and p.incarnation != incarnation and p.held:
            p.gap_since = p.gap_since or p.last_window  # the worker restarted between two ticks
        p.held, p.incarnation, p.state = True, incarnation, s.get("state")
        p.ended = bool(s.get("ended", p.state == "ended"))
        last = s.get("last_window")
        if last is None:
            return
        if p.gap_since is not None and last > p.gap_since and s["windows"] > 0:
            gap = last - p.gap_since
            hop = self.config.window.hop_s
            lost = max(0, round(gap / hop) - 1)
            self.metrics.lost.labels(p.source.name).inc(lost)
            p.interruptions += 1
            p.last_resume_s = gap
            log.info("front: stream %s publishes again on worker %s after %.1f s (%d windows lost)",
                     p.source.name, p.worker, gap, lost)
            p.gap_since = None
        p.windows, p.last_window = s["windows"], last

    def _drop(self, p: Placement, why: str) -> None:
        log.info("front: stream %s dropped: %s", p.source.name, why)
        self.placements.pop(p.source.name, None)
        self.metrics.forget_stream(p.source.name)

    async def _add_on(self, wid: str, p: Placement) -> None:
        w = self.pool.workers().get(wid)
        if w is None or not w.url:
            return
        if await self._request("POST", w, "/worker/streams", p.source.model_dump(mode="json"), ok=(201, 409)) \
                is not None:
            log.info("front: stream %s started on worker %s", p.source.name, wid)

    async def _request(self, method: str, w: Worker, path: str, body: Any = None,
                       ok: tuple[int, ...] = (200, 201)) -> Any:
        if not w.url or self.session is None:
            return None
        try:
            async with self.session.request(method, w.url + path, json=body, headers={TOKEN_HEADER: self.token},
                                            timeout=aiohttp.ClientTimeout(total=2.0)) as r:
                if r.status not in ok:
                    log.warning("front: %s %s on worker %s: %d %s", method, path, w.id, r.status,
                                (await r.text()).strip())
                    return None
                return await r.json() if r.content_type == "application/json" else {}
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.metrics.scrape_errors.labels(w.id).inc()
            log.debug("front: %s %s on worker %s failed: %s", method, path, w.id, exc)
            return None

    # views
    def owner(self, stream: str) -> Worker | None:
        p = self.placements.get(stream)
        if p is None:
            return None
        return self.pool.workers().get(p.worker)

    async def fetch_all(self, path: str) -> dict[str, str]:
        """GET `path` on every worker (no token: the public routes); {worker: body} of those that answered."""
        workers = self.pool.workers()

        async def one(w: Worker) -> str | None:
            if not w.url or self.session is None:
                return None
            try:
                async with self.session.get(w.url + path, timeout=aiohttp.ClientTimeout(total=3.0)) as r:
                    return await r.text() if r.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.metrics.scrape_errors.labels(w.id).inc()
                return None

        bodies = await asyncio.gather(*(one(w) for w in workers.values()))
        return {wid: b for wid, b in zip(workers, bodies, strict=True) if b is not None}

    def owned_by(self, stream: str, wid: str) -> bool:
        p = self.placements.get(stream)
        return p is not None and p.worker == wid

    async def metrics_text(self) -> bytes:
        return front_exposition(self.metrics, await self.fetch_all("/metrics"), self.owned_by)

    async def snapshot(self) -> list[dict[str, Any]]:
        import json

        texts = await self.fetch_all("/streams")
        out, seen = [], set()
        for wid, text in texts.items():
            for s in json.loads(text)["streams"]:
                if self.owned_by(s["name"], wid) and s["name"] not in seen:
                    seen.add(s["name"])
                    out.append({**s, "worker": wid})
        for name, p in self.placements.items():
            if name not in seen:
                out.append({"name": name, "kind": p.source.kind.value, "url": redact_url(p.source.url),
                            "state": "placing",
                            "worker": p.worker, "last_error": None, "latest": None})
        return sorted(out, key=lambda s: s["name"])
