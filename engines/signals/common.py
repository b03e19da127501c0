"""The pieces every family's measurement shares: the 0-100 curves, luma, a fast percentile, clipping levels."""

from __future__ import annotations

import math

import cv2
import numpy as np

from engines.families import FAMILIES, TIMING

DARK_LEVEL = 10  # luma at or below this is crushed black


BRIGHT_LEVEL = 245  # luma at or above this is blown white


def _falling(x: float, x50: float, p: float) -> float:
    """Log-logistic curve: 1 at x=0, 0.5 at x=x50, towards 0 as x grows (steepness p)."""
    if not math.isfinite(x):
        return float("nan")
    x = max(x, 0.0)
    return 1.0 / (1.0 + (x / x50) ** p)


def _rising(x: float, x50: float, p: float) -> float:
    """1 - _falling: 0 at x=0, 0.5 at x=x50, towards 1 as x grows."""
    if not math.isfinite(x):
        return float("nan")
    x = max(x, 0.0)
    return (x / x50) ** p / (1.0 + (x / x50) ** p)


# (curve, x50, steepness) per raw measurement used in a score, per dimension: each family's curves in the
# catalogue (engines/families.py). A dimension's score is 100 times the product of its factors, so any one bad
# factor pulls the dimension down and clean content stays near 100.
CURVES: dict[str, dict[str, tuple[str, float, float]]] = {f.name: dict(f.curves) for f in FAMILIES}


TIMING_MEASUREMENTS = tuple(k for f in FAMILIES if f.measured_from == TIMING for k in f.curves)  # thumb_signals' keys


# Version 2's curves where version 3 changed them (bundles trained on version 2 read these):
# - blur's x50 was 2.2 px, so a sigma-6 defocus on a 640x360 stream (~2.1 px at the analysed size) raised nothing;
# - noise did not read grain between pictures, so a live encoder's smoothed grain raised nothing either;
# - colour read the light's cast off white beyond 5 degrees and skin saturation beyond natural skin's, which read
#   a warm or cool look (tungsten, candle, shade) as damage and missed chroma offsets.
V2_CURVES = {**CURVES, "blur": {"edge_blur_px": ("falling", 2.2, 3.0)},
             "noise": {"noise_sigma": ("falling", 7.0, 2.0), "grain_sigma": ("falling", 11.0, 2.0)},
             "color": {"colorfulness_at_contrast": ("rising", 10.0, 2.0),
                       "cast_excess_deg": ("falling", 4.0, 2.0), "skin_excess": ("falling", 0.1, 2.0)}}


# Version 1 read the colour cast from the grey-edge estimate of each region (the face crop's for the face).
# Its noise read the full-resolution estimator alone.
LEGACY_CURVES = {**V2_CURVES, "color": {"colorfulness": ("rising", 10.0, 2.0), "cast_deg": ("falling", 10.0, 3.0)},
                 "noise": {"noise_sigma": ("falling", 7.0, 2.0)}}


# BT.601 RGB -> Y, U, V (full range: Y 0..255, U and V centred on 0), as decoders and pipelines convert
RGB_TO_YUV = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _percentile(a: np.ndarray, q: float) -> np.floating:
    """np.percentile(a, q) (linear interpolation), bit for bit, for a 1-d float array without NaN and a Python
    number q: the same two order statistics and numpy's own interpolation arithmetic (numpy.lib's _lerp, weak
    Python-float weight), from one partition and a min where np.percentile copies, partitions at four ranks
    and checks for NaN (half the cost on the analysis frames; tests/engines/test_signals_speed.py compares them)."""
    n = a.size
    if n == 0:
        raise ValueError("the percentile of an empty array")
    v = (n - 1) * float(np.true_divide(q, 100))
    if v >= n - 1:
        return a.max()
    k = math.floor(v)
    part = np.partition(a, k)
    lo, hi = part[k], part[k + 1:].min()
    g = v - k
    diff = hi - lo
    return hi - diff * (1 - g) if g >= 0.5 else lo + diff * g
