"""Start-up with thousands of sources through the front: /healthz answers within seconds while the streams are
still being placed, and --duration holds even when placement is not done."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.stream.test_workers import Served

pytestmark = pytest.mark.slow  # end to end: workers, many streams or a real Prometheus

SOURCES = 2000
DURATION_S = 25


def test_healthz_answers_while_thousands_of_sources_are_placed(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there: every reader backs off quietly
    config = {
        "no_model": True, "workers": 2, "worker_spares": 0, "limits": {"max_streams": SOURCES},
        "sources": [{"name": f"s{i}", "url": f"rtmp://127.0.0.1:{dead}/live/s{i}"} for i in range(SOURCES)],
    }
    served = Served(tmp_path, config, "--duration", str(DURATION_S))
    try:
        served.wait(lambda: served.get("/healthz")[0] == 200, "the front's first /healthz", 120)
        first = time.monotonic()
        slowest, placed_then = 0.0, []
        while time.monotonic() - first < 8:
            t0 = time.monotonic()
            with urllib.request.urlopen(served.url + "/healthz", timeout=10) as r:
                body = json.loads(r.read())
            slowest = max(slowest, time.monotonic() - t0)
            placed_then.append(body["streams"])
            time.sleep(0.5)
        print(f"\n/healthz while placing {SOURCES} sources: slowest answer {slowest:.2f} s, streams listed "
              f"{placed_then[0]} -> {placed_then[-1]}")
        assert slowest < 3.0, slowest
        assert placed_then[0] < SOURCES, "placement was over before the HTTP answered: not served during it"
        served.proc.wait(DURATION_S + 30)
        took = time.monotonic() - first
        print(f"--duration {DURATION_S}: exited {took:.1f} s after the first /healthz")
        assert served.proc.returncode == 0 and took < DURATION_S + 25, (took, served.tail())
    finally:
        served.stop()
