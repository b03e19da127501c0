"""Writes the demo streams samples/clean.mp4 and samples/degraded.mp4 from real face media (python -m samples.make_samples).

Each is 10 s of 640x360 at 25 fps, H.264 yuv420p, made to loop: 5 s of the carphone talking head
(upscaled, played forwards then backwards) followed by 5 s of the astronaut photo with periodic camera
motion (the motion ends where it starts). `clean.mp4` is high quality; `degraded.mp4` carries blur,
sensor noise, a 1 s freeze and heavy compression at a low bitrate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from train import distortions as D
from train.face_sources import FaceSource, load_carphone, source_by_name
from train.media import RenderedClip, render, write_mp4

WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 25, 10.0
CLEAN_CRF = 19
DEGRADED_BITRATE = 100_000  # bits/s: heavy compression for 640x360
HERE = Path(__file__).parent


def face_clip(seed: int = 0) -> RenderedClip:
    """The 10 s pristine face clip both samples are made from."""
    half = SECONDS / 2
    carphone = FaceSource("carphone-full", "carphone-full", "video", load_carphone, segment=(0, 120))
    a = render(carphone, WIDTH, HEIGHT, FPS, half, seed=seed)
    b = render(source_by_name("astronaut-c0"), WIDTH, HEIGHT, FPS, half, seed=seed, loop=True)
    return RenderedClip("samples", np.concatenate([a.frames, b.frames]), FPS, np.concatenate([a.boxes, b.boxes]))


def degrade(clip: RenderedClip, seed: int = 0) -> np.ndarray:
    """Blur and sensor noise over the whole clip, then a 1 s freeze in each half (the bitrate comes at write)."""
    out = D.apply(clip, [D.Distortion("blur", "gaussian", 3), D.Distortion("noise", "sensor", 3)], seed)
    frames = out.frames.copy()
    for start in (int(2.0 * FPS), int(7.0 * FPS)):
        frames[start:start + FPS] = frames[start - 1]
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.make_samples", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE), help="folder to write clean.mp4 and degraded.mp4 into")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = face_clip()
    write_mp4(out / "clean.mp4", clip.frames, FPS, crf=CLEAN_CRF, preset="slow")
    write_mp4(out / "degraded.mp4", degrade(clip), FPS, crf=None, bitrate=DEGRADED_BITRATE, preset="veryfast")
    for name in ("clean.mp4", "degraded.mp4"):
        print(f"{out / name}: {(out / name).stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
