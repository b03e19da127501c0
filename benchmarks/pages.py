"""The status pages at scale: a monitor holding 64 streams, each with a full hour of timeline, its evidence frames,
latest and clean frames (from the demo's samples, analysed for real), served by the real HTTP server; a headless
Chromium loads `/` and a stream page and times them; the frames' memory is counted.

    python -m benchmarks.pages                      # 64 streams, 5 loads of each page
    python -m benchmarks.pages --streams 16 --loads 3

The streams are WHIP slots without a publisher (nothing decodes): what is measured is the pages, the frames and the
store, not the analysis; plain decoding of the clean sample is measured in the same run for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"

TIMING = """(() => { const n = performance.getEntriesByType("navigation")[0];
  return {response: n.responseEnd, dom: n.domContentLoadedEventEnd, load: n.loadEventEnd,
          images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
          rows: document.querySelectorAll("tr.stream").length}; })()"""


def sample_windows():
    """The clean and degraded samples' windows and results, analysed for real (faces, signals; no model)."""
    from engines.face import FaceExtractor
    from stream.config import MonitorConfig
    from stream.live.analysis import Analyzer
    from stream.live.offline import analyse_file

    out = {}
    for name in ("clean", "degraded"):
        a = analyse_file(SAMPLES / f"{name}.mp4", MonitorConfig(), Analyzer(FaceExtractor(), None), keep_windows=True)
        out[name] = list(zip(a.windows, a.results, strict=True))
    return out


def fill(monitor, streams: int, windows) -> None:
    """`streams` streams, each with an hour of timeline, latest/clean frames and its evidence store full."""
    from stream.config import SourceConfig, SourceKind

    store = monitor.evidence
    now = time.time()
    for i in range(streams):
        name = f"cam{i:02d}"
        stream = monitor.add_stream(SourceConfig(name=name, url=f"whip:{name}", kind=SourceKind.whip))
        st = stream.state
        st.width, st.height, st.codec, st.nominal_fps, st.fps, st.bitrate_bps = 640, 360, "h264", 25.0, 25.0, 4e6
        st.state = "up"
        clean, bad = windows["clean"], windows["degraded"]  # every stream holds all it can: the worst case
        store.observe(st, *clean[2])  # the latest and the clean frame
        timeline = store._streams[name].timeline
        for k in range(store.timeline_points):  # the hour, one window a second
            timeline.add(now - (store.timeline_points - k), bad[k % len(bad)][1])
        for k in range(store.MAX_EVIDENCE + 2):  # episodes of the degraded sample's causes, each a new evidence
            store.observe(st, *bad[(3 + k) % len(bad)])
            store.observe(st, *clean[(3 + k) % len(clean)])
        st.latest = bad[-1][1]
        if i % 2:
            st.recommendation = {"cause": "compression", "action": "raise the bitrate (or use a slower encoder preset)"}


def observe_cost(windows, rounds: int = 5) -> dict[str, float]:
    """Thread CPU seconds per window of the store's work in the analysis thread, replaying each sample's windows in
    order (its causes raised and sharpened at the sample's own pace), with the clean frame encoded on every clean
    window (an upper bound: the store renews it every 10 s); and of encoding the latest frame when a viewer asks
    (the page asks every 5 s)."""
    from stream.config import AlertConfig
    from stream.live.evidence import EvidenceStore
    from stream.live.stream_state import StreamState
    from stream.ops.metrics import build_metrics

    out = {}
    for name, pairs in windows.items():
        store = EvidenceStore(AlertConfig())
        store.CLEAN_EVERY_S = 0.0
        st = StreamState(name, "file", "x", build_metrics())
        st.width, st.height, st.fps, st.bitrate_bps = 640, 360, 25.0, 1e5
        t0, n = time.thread_time(), 0
        for _ in range(rounds):
            for w, r in pairs:
                store.observe(st, w, r)
                n += 1
        out[name] = (time.thread_time() - t0) / n
        spent = 0.0
        for w, r in pairs:
            store.observe(st, w, r)
            t0 = time.thread_time()
            store.latest_jpeg(name)
            spent += time.thread_time() - t0
        out[f"{name}, latest frame encoded for a viewer"] = spent / len(pairs)
    return out


def serve(monitor):
    """The monitor's HTTP server on a free loopback port, in a thread; returns (url, stop)."""
    from stream.http.server import start_server

    ready, box = threading.Event(), {}

    async def main() -> None:
        runner = await start_server(monitor, "127.0.0.1", 0)
        box["port"], box["stop"], box["loop"] = runner.addresses[0][1], asyncio.Event(), asyncio.get_running_loop()
        ready.set()
        await box["stop"].wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    ready.wait(30)

    def stop() -> None:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)

    return f"http://127.0.0.1:{box['port']}", stop


async def load_times(url: str, loads: int) -> list[dict]:
    from benchmarks.chromium import Chromium

    out = []
    async with Chromium() as browser:
        page = await browser.open("about:blank")
        for _ in range(loads):
            await page.navigate(url)
            out.append(await page.evaluate(TIMING))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--loads", type=int, default=5, help="page loads of each page (a fresh navigation each)")
    args = p.parse_args(argv)
    from benchmarks.live import plain_decode_cost
    from stream.config import MonitorConfig
    from stream.live.analysis import Analyzer
    from stream.live.monitor import Monitor

    decode = plain_decode_cost(SAMPLES / "clean.mp4")
    print(f"plain decode of samples/clean.mp4 (640x360 25 fps, PyAV, 1 thread): {decode:.3f} CPU-s per stream-second")
    windows = sample_windows()
    cost = observe_cost(windows)
    print("the frames' work in the analysis thread, thread CPU per window (= per stream-second at hop 1 s): "
          + ", ".join(f"{k} {v * 1000:.2f} ms ({100 * v / decode:.2f}% of plain decode)" for k, v in cost.items()))
    cfg = MonitorConfig.model_validate({"limits": {"max_streams": max(64, args.streams)}})
    monitor = Monitor(cfg, Analyzer(None, None))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    fill(monitor, args.streams, windows)
    filled_cpu = time.process_time() - t0
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    held = monitor.evidence.memory_bytes()
    evidence = sum(len(monitor.evidence.describe(n, "")["evidence"]) for n in monitor.streams)
    print(f"{args.streams} streams: {evidence} evidence frames, {monitor.evidence.timeline_points} timeline points "
          f"each; the store holds {held / 2**20:.1f} MiB ({held / args.streams / 1024:.0f} KiB a stream); "
          f"Python allocations while filling {traced / 2**20:.1f} MiB (streams' state included); "
          f"filling took {filled_cpu:.1f} CPU-s")
    url, stop = serve(monitor)
    try:
        for label, path in (("/", "/"), ("a stream page", "/streams/cam01?format=html")):
            times = asyncio.run(load_times(url + path, args.loads))
            loads = [t["load"] for t in times]
            print(f"Chromium, {label}: response {statistics.median(t['response'] for t in times):.0f} ms, "
                  f"DOM ready {statistics.median(t['dom'] for t in times):.0f} ms, load (every image) median "
                  f"{statistics.median(loads):.0f} ms, max {max(loads):.0f} ms over {len(times)} loads; "
                  f"{times[-1]['images']} images, {times[-1]['rows']} stream rows")
    finally:
        stop()
    print(f"plain decode again: {plain_decode_cost(SAMPLES / 'clean.mp4'):.3f} CPU-s per stream-second "
          "(a shared host: compare the page times with these)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
