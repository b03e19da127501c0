"""Per-call CPU cost of the rater on the live path: frame encoder per frame, window assembly and rating per window.

    python -m benchmarks.rater_cpu [--bundle DIR] [--clip samples/clean.mp4] [--batch 16]

One thread (as the live analysis loop runs it). Frames and windows come from a real clip through the live
path (analyse_file with the default monitor config); batches of `--batch` stand for that many streams.
Prints ms per frame for `frame_features`, ms per window for `window_features` and `rate`, and what that
costs per stream-second at the configured model_fps and hop.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch


def _best_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    from engines.bundle import default_bundle
    from engines.load import load_rater
    from stream.config import MonitorConfig
    from stream.live.analysis import build_analyzer
    from stream.live.offline import analyse_file

    p = argparse.ArgumentParser(prog="python -m benchmarks.rater_cpu", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=default_bundle())
    p.add_argument("--clip", type=Path, default=Path("samples/clean.mp4"))
    p.add_argument("--batch", type=int, default=16, help="frames/windows per call (streams batched together)")
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = MonitorConfig(no_model=True)
    rater = load_rater(args.bundle)
    analyzer = build_analyzer(cfg)
    analysis = analyse_file(args.clip, cfg, analyzer, keep_windows=True)
    frames = analyzer.model_frames(list({id(r): r for w in analysis.windows for r in w.sampled}.values()))
    batch = [frames[i % len(frames)] for i in range(args.batch)]

    def encode() -> None:
        fresh = [copy.copy(r) for r in batch]
        for r in fresh:
            r.extra = {}
        rater.frame_features(fresh)

    rater.frame_features(frames)
    windows = [analysis.windows[i % len(analysis.windows)] for i in range(args.batch)]
    feats = [rater.window_features(w) for w in windows]
    encode(), rater.rate(feats)  # warm-up
    frame_ms = _best_ms(encode, args.reps) / args.batch
    assemble_ms = _best_ms(lambda: [rater.window_features(w) for w in windows], args.reps) / args.batch
    rate_ms = _best_ms(lambda: rater.rate(feats), args.reps) / args.batch
    per_s = frame_ms * cfg.analysis.model_fps + (assemble_ms + rate_ms) / cfg.window.hop_s
    print(f"bundle {args.bundle}; {args.batch} frames/windows per call, 1 thread, CPU time (median of {args.reps})")
    print(f"  frame_features: {frame_ms:.2f} ms per frame (frame {rater.config.spatial_size} + portrait "
          f"{rater.config.portrait_size}), run at model_fps {cfg.analysis.model_fps:g}")
    print(f"  window_features: {assemble_ms:.2f} ms per window; rate: {rate_ms:.2f} ms per window "
          f"(one window per {cfg.window.hop_s:g} s hop)")
    print(f"  model cost per stream-second: {per_s:.1f} CPU-ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
