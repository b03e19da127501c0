"""The front: places streams on workers by measured load, keeps them there, and serves the public HTTP for all of them.

It owns no stream. Every half second (and at once when a worker changes) it reconciles what each worker holds
with the placement: a worker that came back empty (restarted) gets its streams again, a stream that moved is
removed from its old worker. `/metrics` merges the workers' expositions (a stream's series only from the worker
that owns it, so none appears twice; a worker's own series get a `worker` label) with the front's `fvq_worker_*`
series; `/streams` merges their snapshots; per-stream paths (`/streams/{stream}`, WHIP, and any route added with
`add_owner_routes`) are forwarded to the stream's owner; `/sd` lists the workers for Prometheus `http_sd`. The
stream API, reload, media-server hooks and RTMP listen are the front's own (stream/front_api.py): what they create
is placed here like a config stream.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from stream import __version__
from stream.admission import NoWorkerError, StreamCapError, StreamPlacedError, WorkerRefusedError
from stream.config import MonitorConfig, SourceConfig, SourceKind, check_stream_name
from stream.redact import redact_url
from stream.workers import CLIENT_HEADER, TOKEN_HEADER

log = logging.getLogger(__name__)

TICK_S = 0.5
REFERENCE_PIXEL_RATE = 1280 * 720 * 30  # a 720p30 stream: the estimate for a source not opened yet
REFERENCE_COST = 0.12  # CPU-s per second of a 720p30 stream in this monitor (BENCHMARKS.md), until measured
HANG_S = 10.0  # a local worker process alive but silent this long is killed (and restarted)
WHIP_GRACE_S = 10.0  # a WHIP stream placed but not yet held by its worker (POST in flight) is kept this long
FORWARD_OWN = {CLIENT_HEADER.lower(), TOKEN_HEADER.lower()}  # set by the front only, never passed on from a client
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade",
              "proxy-authorization", "te", "trailer", "content-encoding"}


class Worker(Protocol):
    id: str
    url: str | None
    capacity: float  # CPUs it may use: placement divides load by it
    node: str
    restarts: int  # times its process or actor was restarted


class Pool(Protocol):
    """Worker processes or actors: which are up now, and where they answer."""

    reassign_lost: bool  # a worker that stops answering loses its streams to the others (cluster), or keeps them

    def workers(self) -> dict[str, Worker]: ...
    def kill(self, worker_id: str) -> None: ...
    def stop(self) -> None: ...


@dataclass
class Placement:
    """Where one stream runs, what it costs there, and what its moves cost it."""

    source: SourceConfig
    worker: str
    cost: float  # CPU-s per second, estimated then measured
    pushed: bool  # WHIP: the publisher feeds the worker directly; it cannot be re-added elsewhere
    placed_at: float
    held: bool = False  # the worker reported holding it
    incarnation: str | None = None  # of the worker when it was last seen held
    windows: int = 0
    last_window: float | None = None  # epoch of its last window published (any worker)
    gap_since: float | None = None  # a move or restart interrupted it: the last window before that
    interruptions: int = 0
    last_resume_s: float | None = None  # from the last window before an interruption to the first after
    client: str | None = None  # WHIP: the publisher's address, as the front saw it (the per-client cap)
    state: str | None = None  # as its worker last reported it


class FrontMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        w = ["worker"]
        self.up = Gauge("fvq_worker_up", "1 while the worker answers the front.", w, registry=r)
        self.restarts = Counter("fvq_worker_restarts_total", "Times the worker's process or actor was restarted.", w,
                                registry=r)
        self.streams = Gauge("fvq_worker_streams", "Streams placed on the worker.", w, registry=r)
        self.load = Gauge("fvq_worker_load_cpu", "Estimated CPU-s per second of the streams placed on the worker "
                          "(measured from its CPU time, shared by pixel rate).", w, registry=r)
        self.cpu = Gauge("fvq_worker_cpu_cores", "CPU-s per second the worker's process used, last interval.", w,
                         registry=r)
        self.placement = Gauge("fvq_stream_worker", "1 for the worker a stream is placed on.", ["stream", "worker"],
                               registry=r)
        self.moves = Counter("fvq_worker_stream_moves_total", "Streams moved to another worker, by reason "
                             "(lost: the worker stopped answering; rebalance: a worker joined).", ["reason"],
                             registry=r)
        self.lost = Counter("fvq_worker_windows_lost_total", "Windows a stream did not publish while its worker was "
                            "restarted or it moved (the gap over the hop, less one).", ["stream"], registry=r)
        self.scrape_errors = Counter("fvq_worker_scrape_errors_total", "Worker requests that failed.", w,
                                     registry=r)
        self.hook_events = Counter(
            "fvq_hook_events_total", "Media-server publish notifications, by server (nginx, srs, nms), event "
            "(publish, unpublish) and result (added, removed, ignored, refused, unauthorized, error).",
            ["server", "event", "result"], registry=r)
        self.rtmp_rejected = Counter(
            "fvq_rtmp_rejected_total", "RTMP connections refused at the front's listen ports, by reason "
            "(handshake_timeout, key, token, limit, exists, start).", ["reason"], registry=r)
        self.http_rejected = Counter(  # the front's public HTTP (stream.server.ConnectionLimits counts here)
            "fvq_http_rejected_total", "HTTP connections or requests refused, by reason (connections, "
            "client_connections, header_timeout, body_timeout, body_too_large, header_too_large, bad_request).",
            ["reason"], registry=r)
        for reason in ("lost", "rebalance"):
            self.moves.labels(reason)

    def forget_worker(self, wid: str) -> None:
        for metric in (self.up, self.restarts, self.streams, self.load, self.cpu, self.scrape_errors):
            try:
                metric.remove(wid)
            except KeyError:
                pass

    def forget_stream(self, name: str) -> None:
        for metric in (self.placement, self.lost):
            with metric._lock:
                for labels in list(metric._metrics):
                    if labels[0] == name:
                        del metric._metrics[labels]


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
        loop = asyncio.get_running_loop()
        cost = await loop.run_in_executor(None, self.estimate, source) if not pushed else \
            REFERENCE_PIXEL_RATE * self.cost_per_pixel
        if source.name in self.placements:
            raise StreamPlacedError(f"a stream named {source.name!r} is already being watched")
        active = len(self.placements)
        if active >= self.config.limits.max_streams:
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
        self._drop(p, f"worker {p.worker} refused it ({r.status}): {text}")
        raise WorkerRefusedError(text, 429 if r.status == 503 else 400)

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
        texts = await self.fetch_all("/metrics")
        own = {m.name for m in self.metrics.registry.collect()}  # hooks and RTMP listen are counted by the front
        families = [_summed(f) if f.name in SUMMED else f
                    for f in merge_expositions(texts, self.owned_by) if f.name not in own]
        registry = CollectorRegistry()
        registry.register(_Families(families))
        return generate_latest(self.metrics.registry) + generate_latest(registry)

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


SUMMED = {"fvq_streams_active"}  # one series over all workers: what is live now, wherever it runs


def _summed(fam: Metric) -> Metric:
    out = Metric(fam.name, fam.documentation, fam.type, fam.unit)
    out.add_sample(fam.name, {}, sum(s.value for s in fam.samples if s.name == fam.name))
    return out


class _Families:
    """A collector that yields already-built metric families (the merged worker expositions)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(texts: dict[str, str], owned_by) -> list[Metric]:
    """Merges worker expositions into one set of families: a sample with a `stream` label is kept only from the
    worker that owns the stream (a stream still draining on its old worker never shows twice); every other sample
    gets a `worker` label. A series already taken is skipped, so the result never holds one twice."""
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, tuple]] = set()
    for wid in sorted(texts):
        for fam in text_string_to_metric_families(texts[wid]):
            out = merged.get(fam.name)
            if out is None:
                out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                labels = dict(s.labels)
                if "stream" in labels:
                    if not owned_by(labels["stream"], wid):
                        continue
                else:
                    labels["worker"] = wid
                key = (s.name, tuple(sorted(labels.items())))
                if key in seen:
                    continue
                seen.add(key)
                out.add_sample(s.name, labels, s.value, s.timestamp, s.exemplar)
    return list(merged.values())


def probe_pixel_rate(source: SourceConfig) -> float | None:
    """Width x height x fps of a file source (a cheap header read); None for live sources (not opened here)."""
    if source.kind != SourceKind.file:
        return None
    try:
        import av

        with av.open(source.url, options=source.options or None, timeout=5) as c:
            v = c.streams.video[0]
            fps = float(v.average_rate or v.guessed_rate or 25)
            return float(v.codec_context.width * v.codec_context.height * fps)
    except Exception:  # the worker reports the real error when it opens it
        return None


def _reload(catalog) -> None:
    """SIGHUP: re-read the config file; a bad file changes nothing and says why."""
    try:
        catalog.reload()
    except Exception as exc:
        log.error("SIGHUP: the config file was not applied: %s", exc)


# HTTP

FRONT_KEY: web.AppKey[Front] = web.AppKey("front", Front)


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[FRONT_KEY].metrics_text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _streams(request: web.Request) -> web.Response:
    return web.json_response({"streams": await request.app[FRONT_KEY].snapshot()})


async def _healthz(request: web.Request) -> web.Response:
    front = request.app[FRONT_KEY]
    workers = front.pool.workers()
    answering = [wid for wid in workers if wid in front.last_ok]
    unhealthy = [wid for wid in answering if not front.loads.get(wid, {}).get("healthy", True)]
    streams = await front.snapshot()
    ok = bool(answering) and not unhealthy
    body = {
        "status": "ok" if ok and len(answering) == len(workers) else ("degraded" if answering else "no worker up"),
        "workers": len(workers), "workers_up": len(answering), "workers_stalled": unhealthy,
        "streams": len(streams), "streams_up": sum(1 for s in streams if s["state"] == "up"),
    }
    if hasattr(front.pool, "spares_ready"):
        body["worker_spares_ready"] = front.pool.spares_ready()
    return web.json_response(body, status=200 if answering else 503)


async def _sd(request: web.Request) -> web.Response:
    """Prometheus http_sd: one target group per worker, labelled with its worker id and node."""
    groups = []
    for wid, w in sorted(request.app[FRONT_KEY].pool.workers().items()):
        if w.url:
            host = w.url.split("://", 1)[1].rstrip("/")
            groups.append({"targets": [host], "labels": {"worker": wid, "node": w.node}})
    return web.json_response(groups)


async def forward(front: Front, w: Worker, request: web.Request) -> web.StreamResponse:
    """The request as it came, to the worker; its answer as it came back."""
    assert front.session is not None
    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in HOP_BY_HOP and k.lower() not in FORWARD_OWN}
    # the worker sees the front's address: it is told the client's, which it believes only with the token
    headers[CLIENT_HEADER], headers[TOKEN_HEADER] = request.remote or "unknown", front.token
    body = await request.read()
    try:
        async with front.session.request(request.method, w.url + request.rel_url.path_qs, data=body or None,
                                         headers=headers, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=60)) as r:
            payload = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=r.status, body=payload, headers=out)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return web.Response(status=502, text=f"the worker holding this stream did not answer: {exc}\n")


def _owner_handler(front: Front):
    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["stream"]
        w = front.owner(name)
        if w is None or not w.url:
            p = front.placements.get(name)
            if p is None:
                raise web.HTTPNotFound(text=f"no stream named {name!r}\n")
            raise web.HTTPServiceUnavailable(text=f"stream {name!r} is moving to worker {p.worker}; try again\n",
                                             headers={"Retry-After": "1"})
        return await forward(front, w, request)

    return handler


def add_owner_routes(app: web.Application, front: Front, pattern: str, methods: Iterable[str] = ("*",)) -> None:
    """Forwards every request on `pattern` (which names `{stream}`) to the worker that owns that stream; e.g.
    `add_owner_routes(app, front, "/api/v1/streams/{stream}")`."""
    handler = _owner_handler(front)
    for m in methods:
        app.router.add_route(m, pattern, handler)


def _whip_post(front: Front):
    async def handler(request: web.Request) -> web.StreamResponse:
        from stream.whip import ingest_refusal

        name = request.match_info["stream"]
        server = front.config.server
        client = request.remote or "unknown"
        # default-deny and the per-client cap from the real address, before anything is placed (the worker
        # checks both again, from the address the front forwards)
        if (refused := ingest_refusal(server, client, request.headers.get("Authorization", ""))) is not None:
            return refused
        held = sum(1 for q in front.placements.values()
                   if q.pushed and q.client == client and q.state not in ("ended", "error"))
        if held >= server.whip_max_sessions_per_client:
            return web.Response(status=429, headers={"Retry-After": "5"}, text=(
                f"your address holds {held} WHIP sessions already (server.whip_max_sessions_per_client="
                f"{server.whip_max_sessions_per_client}): DELETE one first\n"))
        try:
            check_stream_name(name)
        except ValueError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        placed = None
        p = front.placements.get(name)
        if p is None or not p.pushed:
            if p is not None:
                return web.Response(status=409, text=f"a stream named {name!r} is already being watched\n")
            source = SourceConfig(name=name, url=f"whip:{name}", kind=SourceKind.whip)
            try:
                placed = p = await front.add_source(source, pushed=True)
                p.client = client
            except NoWorkerError as exc:
                return web.Response(status=503, text=f"{exc}\n", headers={"Retry-After": "1"})
            except StreamCapError as exc:
                return web.Response(status=503, text=f"{exc}; try again when a stream has ended\n")
        w = front.pool.workers().get(p.worker)
        if w is None or not w.url:
            return web.Response(status=503, text="the stream's worker is restarting; try again\n",
                                headers={"Retry-After": "1"})
        response = await forward(front, w, request)
        if placed is not None and response.status >= 300:
            front._drop(placed, f"its WHIP offer was refused ({response.status})")
        return response

    return handler


async def _whip_options(request: web.Request) -> web.Response:
    from stream.whip import SDP

    return web.Response(status=204, headers={"Accept-Post": SDP})  # CORS: _cors, for allowed origins only


async def _cors(request: web.Request, response: web.StreamResponse) -> None:
    from stream.whip import cors_headers

    response.headers.update(cors_headers(request.app[FRONT_KEY].config.server, request))


def build_front_app(front: Front, catalog=None, limits=None) -> web.Application:
    """The front's HTTP: merged views, per-stream routes to the owner, and (given the front's catalog, a
    stream.front_api.FrontCatalog) the stream API and media-server hooks; under `limits` (a
    stream.server.ConnectionLimits) the single process's body timeout and keep-alive limit."""
    from stream.server import limits_middleware

    middlewares = [limits_middleware(limits)] if limits is not None else []
    app = web.Application(client_max_size=front.config.server.whip_max_body_bytes, middlewares=middlewares)
    app[FRONT_KEY] = front
    app.on_response_prepare.append(_cors)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/streams", _streams)
    app.router.add_get("/sd", _sd)
    add_owner_routes(app, front, "/streams/{stream}", ("GET",))
    app.router.add_post("/whip/{stream}", _whip_post(front))
    app.router.add_route("OPTIONS", "/whip/{stream}", _whip_options)
    add_owner_routes(app, front, "/whip/{stream}/{session}", ("OPTIONS", "DELETE", "PATCH"))
    if catalog is not None:
        from stream.front_api import add_front_api_routes

        add_front_api_routes(app, catalog)
    return app


async def serve_front(config: MonitorConfig, pool_factory, duration: float = 0.0, table: bool = False,
                      ready=None, config_path=None, overrides: dict | None = None) -> None:
    """Starts the pool (via `pool_factory(token, poke)`), the front and its HTTP server; runs until SIGINT/SIGTERM
    (or `duration` seconds); SIGHUP re-reads `config_path` and applies the difference in its streams.
    `ready(front, url)` is called once serving."""
    import signal
    import sys

    from stream.server import ConnectionLimits, bind_http_socket, limited_runner, raise_open_file_limit

    token = secrets.token_urlsafe(24)
    loop = asyncio.get_running_loop()
    front_box: list[Front] = []
    # the public port first: one in use is a clear error (PortInUseError) before any worker starts
    raise_open_file_limit(config.server.max_connections + 256 + 8 * config.limits.max_streams)
    listening = bind_http_socket(config.server.host, config.server.port)

    def poke() -> None:
        if front_box:
            loop.call_soon_threadsafe(front_box[0].poke)

    try:
        pool = await loop.run_in_executor(None, pool_factory, token, poke)
    except BaseException:
        listening.close()
        raise
    front = Front(config, pool, token)
    front_box.append(front)
    runner = catalog = None
    try:
        from stream.front_api import FrontCatalog

        await front.start()
        catalog = FrontCatalog(front, loop, config_path, overrides)
        await loop.run_in_executor(None, catalog.streams.start, config.sources)  # RTMP listen: the front's nginx
        await loop.run_in_executor(None, catalog.load_state)  # persisted API streams, placed once, by the front
        await front.reconcile()  # the placement's series are right from the first request
        # the single process's limits: timeouts, connection caps (503 + reason), keep-alive and header bounds
        limits = ConnectionLimits(config.server, front.metrics)
        runner = limited_runner(build_front_app(front, catalog, limits), limits)
        await runner.setup()
        site = web.SockSite(runner, listening)
        await site.start()
        addr = runner.addresses[0] if runner.addresses else (config.server.host, config.server.port)
        url = f"http://{addr[0]}:{addr[1]}"
        print(f"fvq {__version__}: serving {url}/metrics  /streams  /healthz  /sd  POST /whip/{{stream}} "
              f"({len(pool.workers())} workers)", flush=True)
        if ready is not None:
            ready(front, url)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, _reload, catalog))
        started = time.monotonic()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
            if table:
                from stream.table import render_table

                sys.stdout.write(render_table(await front.snapshot()))
                sys.stdout.flush()
            if duration and time.monotonic() - started > duration:
                break
    finally:
        if runner is None:
            listening.close()
        if catalog is not None:
            await loop.run_in_executor(None, catalog.streams.close)
        await front.stop()
        if runner is not None:
            await runner.cleanup()
        await loop.run_in_executor(None, pool.stop)
