"""A worker: one Monitor owning a share of the streams, its HTTP (the usual app plus a control API), and its process.

The front (stream/scale/front.py) places streams on workers and talks to them over HTTP only, whether a worker is a
local process (`python -m stream.scale.workers`, supervised by `LocalPool` here) or a Ray actor (stream/scale/cluster.py):

- `POST /worker/streams` (a SourceConfig as JSON) adds a stream, `DELETE /worker/streams/{stream}` removes it;
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
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
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
                "state": st.state, "kind": st.kind, "pixels_per_s": float(st.width * st.height * fps),
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


# the local pool: worker processes supervised by the front

@dataclass
class LocalWorker:
    """A worker slot on this machine: its current process and what it reported when ready."""

    id: str
    proc: subprocess.Popen | None = None
    url: str | None = None
    incarnation: str | None = None
    restarts: int = 0
    capacity: float = 1.0
    node: str = "local"
    alive: bool = False
    events: list[str] = field(default_factory=list)


class LocalPool:
    """Worker processes on this machine. A worker that exits is replaced at once by a warm spare (a started
    worker with its models loaded, holding no stream) when one is ready, else by a new process, and keeps its
    slot: its streams go back to it, never to another worker. `on_change` is called (from a supervision
    thread) whenever a worker's address changes, so the front re-adds its streams without waiting for a tick."""

    reassign_lost = False  # a lost worker comes back in its slot, with its streams

    def __init__(self, config: MonitorConfig, count: int, spares: int, token: str,
                 on_change: Callable[[], None] | None = None, on_restart: Callable[[str], None] | None = None) -> None:
        self.config, self.count, self.spares_wanted, self.token = config, count, spares, token
        self.on_change = on_change or (lambda: None)
        self.on_restart = on_restart or (lambda worker_id: None)
        self.slots = {f"w{i}": LocalWorker(f"w{i}") for i in range(count)}
        self._spares: list[tuple[subprocess.Popen, dict]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="fvq-workers-"))
        self._config_path = self._dir / "config.json"
        worker_cfg = config.model_copy(update={"sources": [], "workers": 1})
        self._config_path.write_text(worker_cfg.model_dump_json())
        self._threads: list[threading.Thread] = []

    # processes
    def _spawn(self, worker_id: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "stream.scale.workers", "--config", str(self._config_path), "--id", worker_id]
        env = {**os.environ, "FVQ_WORKER_TOKEN": self.token}
        # stdin stays a pipe the worker watches: when the front dies, for any reason, its workers follow
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)

    @staticmethod
    def _wait_ready(proc: subprocess.Popen, timeout: float = 180.0) -> dict | None:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                return None  # exited before it was ready
            if line.startswith(READY_PREFIX):
                return json.loads(line[len(READY_PREFIX):])
        return None

    def start(self) -> None:
        """Starts every worker (in parallel) and the spares; returns once the workers are ready."""
        procs = {wid: self._spawn(wid) for wid in self.slots}
        for wid, proc in procs.items():
            info = self._wait_ready(proc)
            if info is None:
                self.stop()
                raise RuntimeError(f"worker {wid} exited before it was ready (exit status {proc.poll()}); see its log")
            self._install(wid, proc, info)
        self._refill_spares()

    def _install(self, worker_id: str, proc: subprocess.Popen, info: dict) -> None:
        with self._lock:
            slot = self.slots[worker_id]
            slot.proc, slot.url, slot.incarnation, slot.alive = proc, info["url"], info["incarnation"], True
        t = threading.Thread(target=self._supervise, args=(worker_id, proc), name=f"supervise-{worker_id}",
                             daemon=True)
        t.start()
        self._threads.append(t)

    def _refill_spares(self) -> None:
        def make() -> None:
            proc = self._spawn("spare")
            info = self._wait_ready(proc)
            if info is None or self._stopping.is_set():
                _terminate(proc)
                return
            with self._lock:
                self._spares.append((proc, info))

        with self._lock:
            missing = self.spares_wanted - len(self._spares)
        for _ in range(max(0, missing)):
            threading.Thread(target=make, name="spare-start", daemon=True).start()

    def _supervise(self, worker_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if self._stopping.is_set():
            return
        log.warning("worker %s (pid %d) exited with status %s: restarting it", worker_id, proc.pid, code)
        with self._lock:
            slot = self.slots[worker_id]
            if slot.proc is not proc:
                return
            slot.alive, slot.url = False, None
            slot.restarts += 1
            spare = self._spares.pop(0) if self._spares else None
        self.on_restart(worker_id)
        self.on_change()
        while not self._stopping.is_set():
            if spare is not None and spare[0].poll() is None:
                new, info = spare
                try:
                    _post_json(info["url"] + "/worker/identity", {"id": worker_id}, self.token)
                except OSError as exc:
                    log.warning("spare worker pid %d did not take slot %s: %s", new.pid, worker_id, exc)
                    _terminate(new)
                    spare = None
                    continue
            else:
                new = self._spawn(worker_id)
                info = self._wait_ready(new)
                if info is None:
                    log.error("worker %s failed to restart (status %s); trying again in 1 s", worker_id, new.poll())
                    self._stopping.wait(1.0)
                    continue
            self._install(worker_id, new, info)
            log.info("worker %s is back (pid %d, %s)", worker_id, new.pid, "a warm spare" if spare else "cold start")
            self.on_change()
            self._refill_spares()
            return

    def spares_ready(self) -> int:
        with self._lock:
            return sum(1 for proc, _ in self._spares if proc.poll() is None)

    def kill(self, worker_id: str) -> None:
        """For tests and benchmarks: SIGKILL a worker's process (the pool restarts it)."""
        proc = self.slots[worker_id].proc
        if proc is not None:
            proc.kill()

    def workers(self) -> dict[str, LocalWorker]:
        with self._lock:
            return {wid: slot for wid, slot in self.slots.items() if slot.alive}

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            procs = [s.proc for s in self.slots.values() if s.proc is not None] + [p for p, _ in self._spares]
            self._spares.clear()
        for proc in procs:
            _terminate(proc, wait=False)
        for proc in procs:
            _terminate(proc)


def _terminate(proc: subprocess.Popen, wait: bool = True, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the worker stops when its stdin closes
        except OSError:
            pass
        proc.terminate()
    if wait:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _post_json(url: str, body: dict, token: str, timeout: float = 5.0) -> dict:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", TOKEN_HEADER: token})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="One fvq worker process (started by `fvq serve --workers N`).")
    p.add_argument("--config", type=Path, required=True, help="the monitor config as JSON")
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
    cfg = MonitorConfig.model_validate_json(args.config.read_text())
    runtime = WorkerRuntime(cfg, args.id, token, args.host, args.front_url)
    url = runtime.start()
    assert runtime.state is not None
    print(READY_PREFIX + json.dumps({"url": url, "pid": os.getpid(), "incarnation": runtime.state.incarnation}),
          flush=True)
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
