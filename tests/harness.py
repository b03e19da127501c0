"""A running monitor for tests: the real HTTP server and analysis loop in a background thread, on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from stream.config import MonitorConfig
from stream.live.analysis import Analyzer
from stream.live.monitor import Monitor
from stream.ops.metrics import build_metrics


class MonitorHarness:
    def __init__(self, config: MonitorConfig, analyzer: Analyzer, host: str = "127.0.0.1") -> None:
        self.host = host
        self.metrics = build_metrics()
        self.monitor = Monitor(config, analyzer, self.metrics)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        from stream.http.server import start_server

        async def main() -> None:
            runner = await start_server(self.monitor, self.host, 0)
            self.port = runner.addresses[0][1]
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())

    def __enter__(self) -> MonitorHarness:
        self._thread.start()
        assert self._ready.wait(10), "HTTP server did not start"
        self.monitor.start()
        return self

    def __exit__(self, *exc) -> None:
        self.monitor.stop()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def scrape(self) -> dict[tuple[str, tuple], float]:
        """/metrics parsed by prometheus_client's parser: {(sample name, sorted labels): value}."""
        status, body = self.get("/metrics")
        assert status == 200
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def value(self, name: str, **labels) -> float | None:
        return self.scrape().get((name, tuple(sorted(labels.items()))))

    def streams(self) -> dict[str, dict]:
        status, body = self.get("/streams")
        assert status == 200
        return {s["name"]: s for s in json.loads(body)["streams"]}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; streams: {self.streams()}")


def bundle_with_share(out, share: float):
    """A copy of the shipped bundle at `out` whose model has `share` of the published score (the shipped one's
    is 0, where the live path skips the model): for tests of the model's own path."""
    import shutil

    from engines.bundle import read_manifest, save_manifest, shipped_bundle

    shutil.copytree(shipped_bundle(), out)
    manifest = read_manifest(out)
    manifest["prior"]["model_weight"] = share
    save_manifest(out, manifest)
    return out
