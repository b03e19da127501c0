"""Luminance: exposure against mid-grey, crushed and blown shares, contrast."""

from __future__ import annotations

import math

import numpy as np

from engines.signals.common import BRIGHT_LEVEL, DARK_LEVEL

MID_GREY = 118.0  # luma of a well exposed scene's mean (sRGB middle grey is ~118)


def _luminance(y: np.ndarray) -> dict[str, float]:
    mean = float(y.mean())
    return {
        "mean_luma": mean,
        "exposure_stops": abs(math.log2(max(mean, 1.0) / MID_GREY)),
        "dark_share": float(np.count_nonzero(y <= DARK_LEVEL)) / y.size,
        "bright_share": float(np.count_nonzero(y >= BRIGHT_LEVEL)) / y.size,
        "contrast": float(y.std()),
    }


# Exposure with a face in the picture is judged on the face. A face's mean alone cannot tell an under-exposed face
# from a darker skin or a key light that leaves half the face in shade (a low-key look): its brightest 1 % (a
# forehead's highlight, the lit cheek, light hair) can, since an exposure gain darkens them with the rest and a skin
# tone or a key light does not. The face's under-exposure is the smaller of the two readings (its mean against
# MID_GREY, its key against FACE_KEY_LUMA): a light face reads as before, a dim one lit well reads clean. And a
# background darker than the face (a presenter lit in a dark room, a low-key scene's fall-off and crushed shadows)
# is how the scene was lit: the frame's under-exposure and crushed blacks are then the face's; its blown whites
# stay its own. Measured on the origins' clips through x264 (benchmarks/origins.py): the key of a clean face is
# 174-228 (carphone's 176x144 face the lowest), 152-216 under the low-key look, whose mean falls to 80-135.
FACE_KEY_SHARE = 0.99
FACE_KEY_LUMA = 180.0


def key_luma(y: np.ndarray) -> float:
    """The luma of a region's brightest 1 % (FACE_KEY_SHARE's percentile): a face's key."""
    flat = y.reshape(-1)
    if flat.size == 0:
        return float("nan")
    k = min(flat.size - 1, int(FACE_KEY_SHARE * flat.size))
    return float(np.partition(flat, k)[k])


def _under_stops(mean: float, key: float) -> float:
    return min(max(0.0, math.log2(MID_GREY / max(mean, 1.0))),
               max(0.0, math.log2(FACE_KEY_LUMA / max(key, 1.0))) if math.isfinite(key) else math.inf)


def judge_exposure_on_face(face: dict[str, float], frame: dict[str, float] | None) -> None:
    """Rewrites a window's raw luminance readings (medians over its pictures, region -> name -> value) so exposure is
    judged on the face (above): the face's `exposure_stops`, and the frame's exposure and crushed share where the
    frame is darker than its face. Exposure readings can only move towards well exposed (the median over the pictures
    of |stops| is at least the stops of their median luma) and the frame's crushed blacks only fall."""
    mean, key = face.get("mean_luma", math.nan), face.get("key_luma", math.nan)
    if not math.isfinite(mean):
        return
    over = max(0.0, math.log2(max(mean, 1.0) / MID_GREY))
    face["exposure_stops"] = max(over, _under_stops(mean, key))
    if frame is None or not frame.get("mean_luma", math.inf) < mean:
        return
    frame["exposure_stops"] = min(frame.get("exposure_stops", math.inf), face["exposure_stops"])
    dark = min(frame.get("dark_share", math.inf), face.get("dark_share", math.inf))
    if math.isfinite(dark):
        frame["clipped_share"] = dark + frame.get("bright_share", 0.0)
