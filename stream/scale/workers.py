"""A worker: one Monitor owning a share of the streams, its HTTP (the usual app plus a control API), and its process.

The front (stream/scale/front.py) places streams on workers and talks to them over HTTP only, whether a worker is a
local process (`python -m stream.scale.workers`, supervised by `LocalPool` in stream/scale/local_pool.py) or a Ray
actor (stream/scale/cluster.py):

- `POST /worker/streams` (a SourceConfig as JSON) adds a stream, `DELETE /worker/streams/{stream}` removes it,
  `POST /worker/streams/{stream}/left` says its publisher left (it goes `down` or `ended`, and stays a while);
- `GET /worker/load` reports the process's CPU time and, per stream, its state, pixel rate and windows published,
  from which the front measures the cost of each stream;
- `POST /worker/identity` renames a warm spare when it takes over a dead worker's slot.

Control requests carry the front's token (`X-Fvq-Worker-Token`); the rest of the app (/metrics, /streams, WHIP)
is the single-process server's; a WHIP request the front forwards names its real client in `X-Fvq-Client`,
believed only next to the token (default-deny and the per-client cap apply to the publisher, not to the front).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import resource
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from stream.config import MonitorConfig, SourceConfig, default_workers  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Fvq-Worker-Token"
# the client address the front saw, on requests it forwards; a worker believes it only with TOKEN_HEADER
CLIENT_HEADER = "X-Fvq-Client"
READY_PREFIX = "FVQ-WORKER-READY "


class WorkerState:
    """What the control API reports beyond the monitor: identity, incarnation, windows published per stream."""

    def __init__(self, monitor: Any, worker_id: str, token: str) -> None:
        self.monitor = monitor
        self.worker_id = worker_id
        self.token = token
        self.incarnation = uuid.uuid4().hex[:12]  # a fresh process (or restarted actor) holds nothing yet
        self.started = time.time()
        self.windows: dict[str, int] = {}
        self.last_window: dict[str, float] = {}
        monitor.listeners.append(self._published)

    def _published(self, state: Any, result: Any) -> None:
        self.windows[state.name] = self.windows.get(state.name, 0) + 1
        self.last_window[state.name] = time.time()

    def load(self) -> dict[str, Any]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        streams = {}
        for name, s in list(self.monitor.streams.items()):
            st = s.state
            fps = st.fps or st.nominal_fps or 0.0
            streams[name] = {
                "state": st.state, "ended": st.ended_at is not None, "kind": st.kind, "pixels_per_s": float(st.width * st.height * fps),
                "windows": self.windows.get(name, 0), "last_window": self.last_window.get(name),
            }
        return {
            "id": self.worker_id, "pid": os.getpid(), "incarnation": self.incarnation, "started": self.started,
            "cpu_s": r.ru_utime + r.ru_stime, "rss_mib": r.ru_maxrss / 1024, "healthy": self.monitor.healthy,
            "streams": streams,
        }


WORKER_KEY: web.AppKey[WorkerState] = web.AppKey("worker", WorkerState)


def _authorized(request: web.Request) -> bool:
    given = request.headers.get(TOKEN_HEADER, "")
    return hmac.compare_digest(given.encode(), request.app[WORKER_KEY].token.encode())


def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n")


async def _add(request: web.Request) -> web.Response:
    from stream.admission import StreamExistsError, StreamLimitError

    if not _authorized(request):
        return _refuse(401, f"control requests need the front's {TOKEN_HEADER}")
    try:
        source = SourceConfig.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        return _refuse(400, f"not a stream source: {exc}")
    state = request.app[WORKER_KEY]
    try:
        state.monitor.add_stream(source)
    except StreamExistsError as exc:
        return _refuse(409, str(exc))
    except StreamLimitError as exc:
        return _refuse(503, str(exc))
    state.windows.pop(source.name, None)
    return web.json_response({"added": source.name}, status=201)


async def _remove(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _refuse(401, f"control requests need the front's {TOKEN_HEADER}")
    state = request.app[WORKER_KEY]
    name = request.match_info["stream"]
    await asyncio.get_running_loop().run_in_executor(None, state.monitor.remove_stream, name)
    state.windows.pop(name, None)
    return web.json_response({"removed": name})


async def _left(request: web.Request) -> web.Response:
    """The front's RTMP listen or hooks saw the publisher of a stream leave (Monitor.publisher_left)."""
    if not _authorized(request):
        return _refuse(401, f"control requests need the front's {TOKEN_HEADER}")
    try:
        body = await request.json()
    except ValueError:
        body = {}
    expected = body.get("expected") if isinstance(body, dict) else None
    request.app[WORKER_KEY].monitor.publisher_left(request.match_info["stream"],
                                                   expected if isinstance(expected, bool) else None)
    return web.json_response({"left": request.match_info["stream"]})


async def _load(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _refuse(401, f"control requests need the front's {TOKEN_HEADER}")
    return web.json_response(request.app[WORKER_KEY].load())


async def _identity(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _refuse(401, f"control requests need the front's {TOKEN_HEADER}")
    body = await request.json()
    request.app[WORKER_KEY].worker_id = str(body["id"])
    return web.json_response({"id": body["id"]})


def add_worker_routes(app: web.Application, state: WorkerState) -> None:
    app[WORKER_KEY] = state
    app.router.add_post("/worker/streams", _add)
    app.router.add_delete("/worker/streams/{stream}", _remove)
    app.router.add_post("/worker/streams/{stream}/left", _left)
    app.router.add_get("/worker/load", _load)
    app.router.add_post("/worker/identity", _identity)


class WorkerRuntime:
    """A worker's Monitor, HTTP server and recommendations, run in a background thread with its own event loop
    (so a Ray actor or the `python -m stream.scale.workers` process can hold it). `url` is known once `start()` returns."""

    def __init__(self, config: MonitorConfig, worker_id: str, token: str, host: str = "127.0.0.1",
                 front_url: str = "") -> None:
        self.config = config.model_copy(update={"sources": [], "workers": 1})
        self.worker_id, self.token, self.host, self.front_url = worker_id, token, host, front_url
        self.url = ""
        self.state: WorkerState | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="worker-http", daemon=True)

    def start(self, timeout: float = 120.0) -> str:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"worker {self.worker_id} did not start within {timeout:g} s")
        if self._error is not None:
            raise RuntimeError(f"worker {self.worker_id} failed to start: {self._error}") from self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from engines.bundle import bundle_label
        from stream.http.server import build_app
        from stream.live.analysis import build_analyzer
        from stream.live.monitor import Monitor
        from stream.ops.metrics import build_metrics
        from stream.ops.recommend import start_recommendations

        cfg = self.config
        metrics = build_metrics(bundle=bundle_label(cfg.bundle))
        analyzer = build_analyzer(cfg, metrics)
        await asyncio.get_running_loop().run_in_executor(None, warm_up, analyzer, cfg.analysis.width)
        monitor = Monitor(cfg, analyzer, metrics)
        self.state = WorkerState(monitor, self.worker_id, self.token)
        app = build_app(monitor)
        from stream.http.whip import WHIP_KEY

        app[WHIP_KEY].forwarder = (TOKEN_HEADER, CLIENT_HEADER, self.token)  # the real client, from the front
        add_worker_routes(app, self.state)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        port = runner.addresses[0][1]
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self.url = f"http://{host}:{port}"
        monitor.start()
        recommender = start_recommendations(monitor, self.front_url)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, recommender.stop)
            await loop.run_in_executor(None, monitor.stop)
            await runner.cleanup()


def warm_up(analyzer: Any, width: int) -> None:
    """One blank frame through the extractors and the rater's frame encoder: their first run (session and kernel
    set-up, ~1 s) happens before the worker takes streams, not in the first window of a stream it takes over."""
    import numpy as np

    from engines.features import FrameRecord

    metrics, analyzer.metrics = analyzer.metrics, None
    try:
        h = width * 9 // 16
        record = FrameRecord(pts=0.0, thumb=np.zeros((9, 16), np.uint8), source_size=(width, h),
                             image=np.full((h, width, 3), 128, np.uint8))
        analyzer.analyse_frames([record])
    except Exception:  # a warm-up never stops a worker; the first real frame pays instead
        log.exception("worker warm-up failed")
    finally:
        analyzer.metrics = metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="One fvq worker process (started by `fvq serve --workers N`).")
    p.add_argument("--config", required=True, help="the monitor config as JSON: a file, or - for the first line of "
                   "stdin (how the front passes it: no secret written to disk)")
    p.add_argument("--id", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--front-url", default="")
    args = p.parse_args(argv)
    from stream.ops.logs import configure

    # the front's log hygiene: secrets redacted, repeats rate-limited
    configure(logging.INFO, f"%(asctime)s %(levelname)s worker[{args.id}] %(name)s: %(message)s")
    token = os.environ.get("FVQ_WORKER_TOKEN", "")
    if not token:
        print("fvq worker: FVQ_WORKER_TOKEN is not set (workers are started by `fvq serve --workers N`)",
              file=sys.stderr)
        return 2
    text = sys.stdin.readline() if args.config == "-" else Path(args.config).read_text()
    cfg = MonitorConfig.model_validate_json(text)
    runtime = WorkerRuntime(cfg, args.id, token, args.host, args.front_url)
    url = runtime.start()
    assert runtime.state is not None
    try:
        print(READY_PREFIX + json.dumps({"url": url, "pid": os.getpid(), "incarnation": runtime.state.incarnation}),
              flush=True)
    except BrokenPipeError:  # the front exited while we started (e.g. its RTMP port was taken): leave quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no "Exception ignored" at exit
        runtime.stop()
        return 0
    # the front holds our stdin: its end (the front exiting, or closing it) stops the worker
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    import signal

    signal.signal(signal.SIGTERM, lambda *a: done.set())
    while not done.wait(1.0):
        pass
    runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
