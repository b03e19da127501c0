"""Looks and colour-pipeline faults: the clean grades and lights a stream may carry, and the colour breakages it must not.

A look (a light between candle and shade, a stage gel pair, a film grade, low-key or high-key exposure) is how a
production chose to show its picture: a viewer calls it clean, so a clip under any look is labelled clean. A fault
(a chroma offset, swapped chroma planes or channels, a range mix-up, desaturation towards grey, oversaturation
with clipped channels, white balance beyond any light) is how a pipeline breaks colour: a viewer sees it at once.
Both work on RGB uint8 frames, (..., 3), and return the same shape and type.
"""

from __future__ import annotations

import numpy as np

from engines.signals.colour_pipeline import light_rgb
from engines.signals.common import RGB_TO_YUV


def _to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _luma(x: np.ndarray) -> np.ndarray:
    return x[..., :1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114


def relight(frames: np.ndarray, light_k: float, camera_k: float = 6504.0) -> np.ndarray:
    """The scene lit by a black body at `light_k` and shot by a camera white-balanced for `camera_k`: linear RGB
    times the ratio of the two lights, the mean luma kept (the camera's exposure follows the scene)."""
    lin = _to_linear(frames.astype(np.float32) / 255.0)
    gains = (light_rgb(light_k) / light_rgb(camera_k)).astype(np.float32)
    out = lin * gains
    out *= float(_luma(lin).mean()) / max(float(_luma(out).mean()), 1e-6)
    return _u8(_to_srgb(out))


def _stage(frames: np.ndarray) -> np.ndarray:
    """Two coloured gels, magenta from the left and cyan from the right, whose mix is about neutral."""
    x = frames.astype(np.float32) / 255.0
    w = x.shape[-2]
    ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)[:, None]
    left, right = np.array([1.3, 0.72, 1.15], np.float32), np.array([0.72, 1.05, 1.3], np.float32)
    return _u8(x * ((1 - ramp) * left + ramp * right))


def _teal_orange(frames: np.ndarray) -> np.ndarray:
    """The blockbuster grade: shadows pushed towards teal, highlights (and skin) towards orange, ~6% of the range."""
    x = frames.astype(np.float32) / 255.0
    y = _luma(x)
    teal, orange = np.array([-0.06, 0.02, 0.06], np.float32), np.array([0.06, 0.01, -0.06], np.float32)
    return _u8(x + (1.0 - y) * teal * (1.0 - y) + y * y * orange)


def _faded(frames: np.ndarray) -> np.ndarray:
    """Faded blacks: the black point lifted to ~12% grey, whites a little lowered, a fifth of the colour gone."""
    x = frames.astype(np.float32) / 255.0
    y = _luma(x)
    x = y + (x - y) * 0.8
    return _u8(0.12 + 0.84 * x)


def _desaturated_grade(frames: np.ndarray) -> np.ndarray:
    """A muted, desaturated grade: a third of the colour taken out."""
    x = frames.astype(np.float32) / 255.0
    y = _luma(x)
    return _u8(y + (x - y) * 0.65)


def _low_key(frames: np.ndarray) -> np.ndarray:
    """Low-key: a key light on the subject and the rest of the frame falling off to dark (a soft vignette from the
    upper centre, where a portrait's face sits, down to 40% at the corners), mid-tones a little deeper (gamma 1.3).
    The face keeps most of its exposure and nothing clips: a picture darker than a face can be read in is
    underexposure, which is damage, not a look."""
    x = frames.astype(np.float32) / 255.0
    h, w = x.shape[-3:-1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (0.7 * w)) ** 2 + ((yy - h * 0.4) / (0.7 * h)) ** 2
    fall = 0.4 + 0.6 * np.exp(-1.5 * r2)
    return _u8(np.power(x, 1.3) * fall[..., None] + 0.01)


def _high_key(frames: np.ndarray) -> np.ndarray:
    """High-key: bright, airy mid-tones, highlights rolled off below white."""
    x = frames.astype(np.float32) / 255.0
    return _u8(0.96 * (1.0 - np.power(1.0 - x, 1.7)) + 0.02)


# Every look a clean stream may carry: name -> function of RGB uint8 frames. Lights are shot by cameras set the
# way productions set them (a tungsten lamp with the camera between tungsten and daylight, a candle with a
# tungsten-balanced camera, shade with a daylight-balanced one), so each keeps part of its light's colour.
LOOKS = {
    "tungsten": lambda f: relight(f, 2700.0, 4300.0),
    "candle": lambda f: relight(f, 1850.0, 3200.0),
    "shade": lambda f: relight(f, 7500.0, 5200.0),
    "stage": _stage,
    "teal-orange": _teal_orange,
    "faded": _faded,
    "desaturated": _desaturated_grade,
    "low-key": _low_key,
    "high-key": _high_key,
}


def apply_look(frames: np.ndarray, look: str) -> np.ndarray:
    """`frames` under the named look ("none" leaves them as they are)."""
    if look == "none":
        return frames
    if look not in LOOKS:
        raise ValueError(f"unknown look {look!r}; looks: none, {', '.join(LOOKS)}")
    return LOOKS[look](frames)


# ---------------------------------------------------------------------------------------------------------------
# Colour-pipeline faults, each at four strengths (levels 1-4); a fault that has no strength (a swap) is the same at
# every level.
# ---------------------------------------------------------------------------------------------------------------

_YUV_TO_RGB = np.linalg.inv(RGB_TO_YUV).astype(np.float32)

FAULT_LEVELS = {
    "tint-magenta": (0.06, 0.10, 0.15, 0.22),  # each channel offset by this share of its range: R+ G- B+
    "tint-green": (0.06, 0.10, 0.15, 0.22),  # R- G+ B-
    "chroma-offset": (10.0, 20.0, 30.0, 40.0),  # U and V shifted by this many code values (a wrong chroma offset)
    "wb-off-locus": (0.12, 0.2, 0.3, 0.4),  # green gain lowered (magenta) or raised (green) beyond any light
    "swap-uv": (1.0, 1.0, 1.0, 1.0),  # NV12 read as NV21
    "swap-rb": (1.0, 1.0, 1.0, 1.0),  # RGB read as BGR: blue faces
    "range-washed": (1.0, 1.0, 1.0, 1.0),  # limited range shown as full: blacks at 16, whites at 235
    "range-crushed": (1.0, 1.0, 1.0, 1.0),  # full range squeezed as if limited: crushed blacks, blown whites
    "desaturate": (0.45, 0.62, 0.8, 1.0),  # share of the saturation removed
    "oversaturate": (0.6, 1.0, 1.5, 2.1),  # extra saturation, channels clipping
}


def apply_fault(frames: np.ndarray, fault: str, level: int) -> np.ndarray:
    """`frames` with a colour-pipeline fault at `level` (1-4)."""
    if fault not in FAULT_LEVELS:
        raise ValueError(f"unknown colour fault {fault!r}; faults: {', '.join(FAULT_LEVELS)}")
    if not 1 <= level <= 4:
        raise ValueError(f"colour fault level must be 1-4, got {level}")
    v = FAULT_LEVELS[fault][level - 1]
    x = frames.astype(np.float32) / 255.0
    if fault in ("tint-magenta", "tint-green"):
        sign = 1.0 if fault == "tint-magenta" else -1.0
        return _u8(x + sign * v * np.array([1.0, -1.0, 1.0], np.float32))
    if fault in ("chroma-offset", "swap-uv"):
        yuv = x @ RGB_TO_YUV.T
        if fault == "swap-uv":
            yuv = yuv[..., [0, 2, 1]]
        else:
            yuv[..., 1:] += v / 255.0
        return _u8(yuv @ _YUV_TO_RGB.T)
    if fault == "wb-off-locus":
        lin = _to_linear(x)
        out = lin * np.array([1.0, 1.0 - v, 1.0], np.float32)
        out *= float(_luma(lin).mean()) / max(float(_luma(out).mean()), 1e-6)
        return _u8(_to_srgb(out))
    if fault == "swap-rb":
        return np.ascontiguousarray(frames[..., ::-1])
    if fault == "range-washed":
        return _u8((16.0 + x * 219.0) / 255.0)
    if fault == "range-crushed":
        return _u8((x * 255.0 - 16.0) / 219.0)
    y = _luma(x)
    factor = 1.0 - v if fault == "desaturate" else 1.0 + v
    return _u8(y + (x - y) * factor)


def look_for(clip_seed: int, share: float) -> str:
    """The look a corpus clip is shot in: "none" for 1 - `share` of the clips, else one of LOOKS, drawn from the
    clip's own seed (a generator apart from the corpus plan's, so a share of 0 leaves every plan as it was)."""
    if share <= 0:
        return "none"
    rng = np.random.default_rng([clip_seed, 0x100C])
    if rng.random() >= share:
        return "none"
    names = list(LOOKS)
    return names[int(rng.integers(len(names)))]


def relit(clip, look: str):
    """A RenderedClip (train.media) shot in `look`: its frames under the look, everything else as it was. The corpus
    uses the result as the clip's reference, so a look alone is clean and distortions are judged on top of it."""
    if look == "none":
        return clip
    from dataclasses import replace

    return replace(clip, frames=apply_look(clip.frames, look), meta={**clip.meta, "look": look})
