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
