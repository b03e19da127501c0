"""The local pool: worker processes on this machine, supervised by the front, with warm spares for fast restarts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.config import MonitorConfig
from stream.scale.workers import READY_PREFIX, TOKEN_HEADER

log = logging.getLogger(__name__)


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
        # the config (tokens, the webhook's password) goes to each worker over its stdin, never to a file
        self._config_json = config.model_copy(update={"sources": [], "workers": 1}).model_dump_json()
        self._threads: list[threading.Thread] = []

    # processes
    def _spawn(self, worker_id: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "stream.scale.workers", "--config", "-", "--id", worker_id]
        env = {**os.environ, "FVQ_WORKER_TOKEN": self.token}
        # stdin carries the config (one line), then stays a pipe the worker watches: when the front dies, for
        # any reason, its workers follow
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        try:
            assert proc.stdin is not None
            proc.stdin.write(self._config_json + "\n")
            proc.stdin.flush()
        except OSError:  # it died at once: _wait_ready reports it
            pass
        return proc

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
