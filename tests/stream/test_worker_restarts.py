"""fvq_worker_restarts_total counts every restart of a worker: real worker processes behind the front, one killed twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.stream.test_workers import Served


def restarts(served: Served, worker: str) -> float | None:
    values = [v for n, labels, v in served.samples()
              if n == "fvq_worker_restarts_total" and labels.get("worker") == worker]
    return values[0] if values else None


def worker_up(served: Served, worker: str) -> bool:
    return any(n == "fvq_worker_up" and labels.get("worker") == worker and v == 1 for n, labels, v in served.samples())


@pytest.mark.slow  # four cold worker starts (about a minute on two shared cores)
def test_a_worker_killed_twice_is_counted_twice(tmp_path: Path) -> None:
    served = Served(tmp_path, {"sources": [], "no_model": True, "workers": 2, "worker_spares": 0})
    try:
        served.wait(lambda: worker_up(served, "w1") and restarts(served, "w1") == 0, "worker w1 up, no restart", 120)
        for n in (1, 2):
            pid = served.worker_pids()["w1"]
            os.kill(pid, signal.SIGKILL)
            served.wait(lambda pid=pid, n=n: restarts(served, "w1") == n and served.worker_pids().get("w1") not in
                        (None, pid) and worker_up(served, "w1"), f"restart {n} counted and w1 back", 120)
        time.sleep(1.5)  # a few more polls of the front: the count stays at the restarts there were
        assert restarts(served, "w1") == 2
        assert restarts(served, "w0") == 0  # the other worker's count is its own
    finally:
        served.stop()
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "stream.scale.workers" in
                p.info["cmdline"] and str(tmp_path) in " ".join(p.info["cmdline"])]
