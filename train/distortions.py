"""The FVQ-20K distortion ladder: six families, five severities, applied to the whole frame, the face or the background."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.families import DIMENSIONS, TIMING
from engines.families import FAMILIES as CATALOGUE
from train.media import RenderedClip, face_mask, read_mp4

# The families and the kinds of distortion that produce each come from the catalogue (engines/families.py); this
# module implements every kind: its ladder below, its function in _SPATIAL (or _temporal), its place in ORDER.
FAMILIES = DIMENSIONS
KINDS: dict[str, tuple[str, ...]] = {f.name: f.corpus for f in CATALOGUE}
REGIONS = ("full", "face", "background")
LEVELS = (1, 2, 3, 4, 5)

# Strength per severity level 1..5 (mild .. severe). Blur radii are for a 360-line frame and scale with
# the frame height; everything else is resolution-free.
LADDER: dict[tuple[str, str], tuple[float, ...]] = {
    ("blur", "gaussian"): (0.8, 1.5, 2.5, 4.0, 6.0),  # gaussian sigma, px
    ("blur", "defocus"): (1.5, 2.5, 4.0, 6.0, 9.0),  # disk radius, px
    ("noise", "gaussian"): (3.0, 6.0, 10.0, 15.0, 22.0),  # sigma on 0-255
    ("noise", "sensor"): (4.0, 7.0, 11.0, 16.0, 24.0),  # sigma at white on 0-255, shot + read + chroma
    ("color", "desaturate"): (0.25, 0.45, 0.62, 0.8, 1.0),  # share of saturation removed
    ("color", "cast"): (0.06, 0.12, 0.2, 0.3, 0.42),  # white-balance error (R/B gain offset)
    ("color", "saturate"): (0.3, 0.6, 1.0, 1.5, 2.1),  # extra saturation (1 + s times)
    # each channel offset by this share of its range, magenta (R+ G- B+) or green: a wrong chroma offset or range
    # conversion, what no light does (train/looks.py's tint faults at levels 1-4 are 0.06-0.22)
    ("color", "tint"): (0.03, 0.06, 0.10, 0.15, 0.22),
    ("artifact", "crf"): (28.0, 33.0, 38.0, 44.0, 51.0),  # x264 constant rate factor
    ("artifact", "bitrate"): (0.1, 0.05, 0.025, 0.012, 0.006),  # x264 bits per pixel per frame
    ("luminance", "under"): (0.75, 0.58, 0.43, 0.3, 0.2),  # exposure gain
    ("luminance", "over"): (1.3, 1.6, 2.0, 2.6, 3.4),  # exposure gain (highlights clip)
    ("luminance", "contrast"): (0.8, 0.65, 0.5, 0.38, 0.28),  # contrast kept around the mean
    ("temporal", "freeze"): (0.05, 0.1, 0.18, 0.28, 0.4),  # share of the clip frozen (repeated frames)
    ("temporal", "stall"): (0.05, 0.1, 0.18, 0.28, 0.4),  # share of the clip lost to a timestamp gap
}
# Strengths at which a family does nothing (used by the PSNR-matching search as its lower bound).
IDENTITY = {"blur": 0.0, "noise": 0.0}


@dataclass(frozen=True)
class Distortion:
    """One distortion: a family, one of its kinds, a severity level 1-5 and a region. `strength`
    overrides the ladder's value (the PSNR-matched face/background pairs tune it)."""

    family: str
    kind: str
    level: int
    region: str = "full"
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.family not in KINDS:
            raise ValueError(f"unknown distortion family {self.family!r}; families: {', '.join(FAMILIES)}")
        if self.kind not in KINDS[self.family]:
            raise ValueError(f"unknown {self.family} kind {self.kind!r}; kinds: {', '.join(KINDS[self.family])}")
        if self.level not in LEVELS:
            raise ValueError(f"severity level must be 1-5, got {self.level}")
        if self.region not in REGIONS:
            raise ValueError(f"unknown region {self.region!r}; regions: {', '.join(REGIONS)}")
        if self.family == "temporal" and self.region != "full":
            raise ValueError("temporal distortions freeze or drop whole frames: region must be 'full'")

    @property
    def value(self) -> float:
        return LADDER[(self.family, self.kind)][self.level - 1] if self.strength is None else self.strength

    def as_dict(self) -> dict:
        return {"family": self.family, "kind": self.kind, "level": self.level, "region": self.region,
                "strength": round(float(self.value), 4)}


@dataclass
class DistortedClip:
    """Frames as they are written to the file. `pts` are presentation times in seconds (a gap is a
    stall); `shown[i]` is the index of the pristine frame whose content frame i carries (a repeat is a
    freeze)."""

    frames: np.ndarray
    pts: np.ndarray
    shown: np.ndarray
    fps: float
    distortions: tuple[Distortion, ...]


# Fixed application order, as a capture-to-screen pipeline: camera (exposure, colour, focus, sensor),
# then the encoder, then the network.
ORDER = ("luminance", "color", "blur", "noise", "artifact", "temporal")


def _blur(frames: np.ndarray, kind: str, value: float) -> np.ndarray:
    import cv2

    scale = frames.shape[1] / 360.0
    if value <= 0:
        return frames.copy()
    if kind == "gaussian":
        sigma = value * scale
        k = 2 * int(np.ceil(4 * sigma)) + 1  # 4-sigma support: strength changes the blur continuously
        return np.stack([cv2.GaussianBlur(f, (k, k), sigma, borderType=cv2.BORDER_REFLECT101) for f in frames])
    r = value * scale
    size = int(np.ceil(r)) * 2 + 1
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    # Anti-aliased disk (the defocus point-spread function).
    kernel = np.clip(r + 0.5 - np.sqrt(xx**2 + yy**2), 0, 1).astype(np.float32)
    kernel /= kernel.sum()
    return np.stack([cv2.filter2D(f, -1, kernel, borderType=cv2.BORDER_REFLECT101) for f in frames])


def _noise(frames: np.ndarray, kind: str, value: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    if value <= 0:
        return frames.copy()
    t, h, w, _ = frames.shape
    out = np.empty_like(frames)
    for i in range(t):
        x = frames[i].astype(np.float32)
        if kind == "gaussian":
            n = rng.standard_normal((h, w, 3), dtype=np.float32)
            n *= value
        else:
            # Sensor-like: shot noise grows with the signal over a read-noise floor; demosaic-correlated
            # luma grain plus low-frequency chroma blotches.
            grain = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 0.7) * 1.6
            chroma = rng.standard_normal((max(1, h // 4), max(1, w // 4), 3), dtype=np.float32)
            chroma = cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR)
            chroma -= chroma.mean(axis=-1, keepdims=True)
            n = grain[..., None] + 0.8 * chroma
            n *= value * (0.3 + 0.7 * np.sqrt(x / 255.0))
        n += x
        n += 0.5
        np.clip(n, 0, 255, out=n)
        out[i] = n
    return out


def _luma(x: np.ndarray) -> np.ndarray:
    return x[..., :1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114


def _color(frames: np.ndarray, kind: str, value: float, rng: np.random.Generator) -> np.ndarray:
    # Frame by frame (a whole clip in float32 is hundreds of MB and slow); a cast keeps the clip's mean luma.
    gains = None
    if kind == "cast":
        warm = rng.random() < 0.5  # tungsten (warm) or shade (cool) white-balance error
        sign = 1.0 if warm else -1.0
        gains = np.array([1 + sign * value, 1 + sign * value * 0.15, 1 - sign * value], np.float32)
        before = float(np.mean([_luma(f.astype(np.float32)).mean() for f in frames]))
        after = float(np.mean([_luma(f.astype(np.float32) * gains).mean() for f in frames]))
        gains = gains * np.float32(before / max(after, 1e-3))
    offset = None
    if kind == "tint":
        sign = 1.0 if rng.random() < 0.5 else -1.0  # magenta or green
        offset = (sign * value * 255.0 * np.array([1.0, -1.0, 1.0])).astype(np.float32)
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        x = f.astype(np.float32)
        if gains is not None:
            x *= gains
        elif offset is not None:
            x += offset
        else:
            y = _luma(x)
            x = y + (x - y) * (1.0 - value if kind == "desaturate" else 1.0 + value)
        x += 0.5
        out[i] = np.clip(x, 0, 255, out=x)
    return out


def _luminance(frames: np.ndarray, kind: str, value: float) -> np.ndarray:
    if kind in ("under", "over"):
        # Exposure acts on linear light: decode sRGB-ish gamma 2.2, scale, re-encode (a per-level lookup table).
        levels = np.arange(256, dtype=np.float32)
        lut = 255.0 * np.clip((levels / 255.0) ** 2.2 * value, 0, 1) ** (1 / 2.2)
        return np.clip(lut + 0.5, 0, 255).astype(np.uint8)[frames]
    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        x = f.astype(np.float32)
        mean = x.mean()
        x -= mean
        x *= value
        x += mean + 0.5
        out[i] = np.clip(x, 0, 255, out=x)
    return out


def x264_roundtrip(frames: np.ndarray, fps: float, crf: float | None = None, bits_per_pixel: float | None = None,
                   preset: str = "veryfast") -> np.ndarray:
    """Encode the whole clip with x264 (ffmpeg subprocess) at a constant rate factor or a target bitrate,
    and decode it back: real codec artifacts (blocking, ringing, smeared texture, rate-control pumping)."""
    t, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="fvq-x264-") as tmp:
        out = Path(tmp) / "artifact.mp4"
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", f"{fps:.6f}", "-i", "-", "-c:v", "libx264", "-preset", preset,
               "-pix_fmt", "yuv420p", "-threads", "1"]
        if bits_per_pixel is not None:
            kbps = max(1, int(round(bits_per_pixel * w * h * fps / 1000)))
            cmd += ["-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k"]
        else:
            cmd += ["-crf", f"{crf:g}"]
        proc = subprocess.run(cmd + [str(out)], input=np.ascontiguousarray(frames).tobytes(),
                              capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg x264 encode failed: {proc.stderr.decode(errors='replace').strip()}")
        decoded, _ = read_mp4(out)
    if len(decoded) != t:
        raise RuntimeError(f"x264 round trip returned {len(decoded)} frames for {t}")
    return decoded


def _artifact(frames: np.ndarray, kind: str, value: float, fps: float) -> np.ndarray:
    if kind == "crf":
        return x264_roundtrip(frames, fps, crf=value)
    return x264_roundtrip(frames, fps, bits_per_pixel=value)


def _temporal(clip: DistortedClip, kind: str, value: float, level: int, rng: np.random.Generator) -> DistortedClip:
    n = len(clip.frames)
    # At least `level` frames, so the ladder still grows on very short clips.
    length = min(max(int(round(value * n)), level), n - 2)
    if length < 1:
        return clip
    # One event, starting somewhere in the middle part of the clip (never on the first frame).
    start = int(rng.integers(max(1, n // 5), max(2, n - length - n // 10)))
    start = min(start, n - length - 1) if n - length - 1 >= 1 else 1
    end = min(n, start + length)
    if kind == "freeze":
        frames = clip.frames.copy()
        shown = clip.shown.copy()
        frames[start:end] = clip.frames[start - 1]
        shown[start:end] = clip.shown[start - 1]
        return DistortedClip(frames, clip.pts.copy(), shown, clip.fps, clip.distortions)
    keep = np.r_[0:start, end:n]  # dropped frames: the timestamps jump, the player holds the last frame
    return DistortedClip(clip.frames[keep], clip.pts[keep], clip.shown[keep], clip.fps, clip.distortions)


# The picture families' distortions: (frames, kind, strength, fps, rng) -> frames.
_SPATIAL = {
    "blur": lambda frames, kind, value, fps, rng: _blur(frames, kind, value),
    "noise": lambda frames, kind, value, fps, rng: _noise(frames, kind, value, rng),
    "color": lambda frames, kind, value, fps, rng: _color(frames, kind, value, rng),
    "artifact": lambda frames, kind, value, fps, rng: _artifact(frames, kind, value, fps),
    "luminance": lambda frames, kind, value, fps, rng: _luminance(frames, kind, value),
}


def _spatial(frames: np.ndarray, d: Distortion, fps: float, rng: np.random.Generator) -> np.ndarray:
    return _SPATIAL[d.family](frames, d.kind, d.value, fps, rng)


def _check_catalogue() -> None:
    """Every family of the catalogue has its distortions here: a family added there fails here, by name."""
    for f in CATALOGUE:
        missing = [k for k in f.corpus if (f.name, k) not in LADDER]
        if missing:
            raise ValueError(f"train/distortions.py: no LADDER entry for {f.name} kinds {', '.join(missing)}")
        if f.name not in ORDER:
            raise ValueError(f"train/distortions.py: family {f.name} has no place in ORDER")
        if f.measured_from != TIMING and f.name not in _SPATIAL:
            raise ValueError(f"train/distortions.py: no distortion function for family {f.name} in _SPATIAL")


_check_catalogue()


def composite(pristine: np.ndarray, distorted: np.ndarray, masks: np.ndarray, region: str) -> np.ndarray:
    """Keep a distortion only in the face (soft mask) or only in the background."""
    if region == "full":
        return distorted
    out = np.empty_like(distorted)
    for i in range(len(distorted)):
        m = masks[i] if region == "face" else 1.0 - masks[i]
        m = m[..., None]
        a = pristine[i].astype(np.float32)
        a += (distorted[i].astype(np.float32) - a) * m
        a += 0.5
        out[i] = np.clip(a, 0, 255, out=a)
    return out


def apply(clip: RenderedClip, distortions: Sequence[Distortion], seed: int = 0) -> DistortedClip:
    """Apply distortions (at most one per family) in pipeline order. Deterministic for a given seed."""
    families = [d.family for d in distortions]
    if len(set(families)) != len(families):
        raise ValueError(f"one distortion per family, got {families}")
    ds = sorted(distortions, key=lambda d: ORDER.index(d.family))
    n = len(clip.frames)
    out = DistortedClip(clip.frames, np.arange(n) / clip.fps, np.arange(n), clip.fps, tuple(ds))
    masks = None
    for i, d in enumerate(ds):
        rng = np.random.default_rng([seed, FAMILIES.index(d.family), i])
        if d.family == "temporal":
            out = _temporal(out, d.kind, d.value, d.level, rng)
            continue
        frames = _spatial(out.frames, d, clip.fps, rng)
        if d.region != "full":
            if masks is None:
                width, height = clip.size
                masks = face_mask(clip.boxes, width, height)
            frames = composite(out.frames, frames, masks[out.shown], d.region)
        out = DistortedClip(frames, out.pts, out.shown, out.fps, out.distortions)
    return out
