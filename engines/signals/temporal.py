"""Temporal: freezes, duplicates, stalls, drops, stutter, flicker and judder from thumbnails and timestamps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from engines.features import FrameRecord
from engines.signals.common import TIMING_MEASUREMENTS

REPEAT_MAD = 0.05  # mean |difference| (luma levels) between thumbs below which two frames are the same decoded


# picture: exact repeats give 0, an encoder refreshing a repeated picture a few hundredths; a still presenter's
# own motion, even blurred, is several tenths
STILL_MOTION = 0.15  # the window's typical picture change (median over changing pairs) below this is a still scene:


# there a repeat cannot be told from stillness, and only the timestamps judge the timing
REPEAT_SHARE = 0.2  # ...or below this share of the window's typical change (an encoder's refresh of a held picture)


CATCH_UP = 1.1  # a freeze ends with a jump (the motion that went on meanwhile) at least this many times the typical


# change; a run of repeats that ends without one is the encoder holding a still picture, not a freeze
STARVED_QP = 42.0  # median decoder quantiser of the window's sampled frames at or above which repeats are the


# encoder's (held pictures between skipped blocks), not the source's: x264 at CRF 44 held 0.2-0.5 s at a time
FREEZE_MIN_INTERVALS = 3  # a run of repeated pictures this long (in frame intervals) is a freeze, shorter is cadence


# A held picture (SIGNALS_VERSION 3): runs of repeats (pairs under REPEAT_MAD) joined across short refreshes (at most
# HELD_GAP_S of pairs each under HELD_MAD) and lasting at least HELD_MIN_S are a freeze in any scene, with no
# catch-up needed. Measured on the live encoder (640x360 x264 veryfast zerolatency, 2 Mbit/s, keyframe every 2 s)
# re-encoding a frozen picture: 0.001-0.005 levels between most pairs, 0.02-0.15 for a few pairs while it refines
# the held picture, 0.12-0.23 at its keyframes. A still presenter who breathes changes 0.25-0.45 levels between
# pictures, one who only blinks under light sensor noise 0.14-0.18, a moving one 0.8-5 (docs/signals.md).
HELD_MAD = 0.5  # a pair changing less than this may belong to a held picture (a keyframe's refresh of it included)
HELD_GAP_S = 0.25  # a refresh this long (the encoder re-coding the held picture at a keyframe) joins two runs
HELD_MIN_S = 1.0  # ...when the run lasts this long (ffmpeg's freezedetect waits 2 s; a starved encoder holds 0.5 s)


STALL_FACTOR = 2.5  # a timestamp gap this many median intervals long is a stall


# The first measurements (SIGNALS_VERSION 1), which the shipped bundle's forest was trained on: a pair under 0.35
# levels was a repeat, in any scene, with no catch-up test. Bundles read the version they were trained with.
LEGACY_REPEAT_MAD = 0.35  # luma levels: version 1's repeat (and the rater's interval features' repeat flag)


LEGACY_REPEAT = {"repeat_mad": LEGACY_REPEAT_MAD, "still_motion": 0.0, "catch_up": 0.0, "repeat_share": 0.0}


def thumb_change(previous: np.ndarray, thumb: np.ndarray) -> float:
    """Mean |luma difference| (levels) between two frames' thumbnails; 255 when their sizes differ (a new picture)."""
    if previous.shape != thumb.shape:
        return 255.0
    return cv2.norm(previous, thumb, cv2.NORM_L1) / thumb.size


def thumb_changes(frames: Sequence[FrameRecord]) -> np.ndarray:
    """thumb_change of each consecutive pair of frames (n - 1 values): the one each frame carries where the window
    assembler measured it against the frame before it here, measured now otherwise (windows built by hand)."""
    out = np.empty(max(len(frames) - 1, 0), dtype=np.float64)
    for i in range(1, len(frames)):
        f, before = frames[i], frames[i - 1]
        carried = f.change is not None and before.seq >= 0 and f.seq == before.seq + 1
        out[i - 1] = f.change if carried else thumb_change(before.thumb, f.thumb)
    return out


def thumb_signals(thumbs: list[np.ndarray], pts: np.ndarray, nominal_fps: float | None,
                  repeat_mad: float = REPEAT_MAD, still_motion: float = STILL_MOTION,
                  catch_up: float = CATCH_UP, repeat_share: float = REPEAT_SHARE,
                  changes: np.ndarray | None = None, held_mad: float = 0.0) -> dict[str, float]:
    """Temporal raw measurements from every frame's luma thumbnail and its presentation time (seconds).

    `changes`: the thumb_change of each consecutive pair when the caller has them (thumb_changes), else measured.
    `held_mad` > 0 (version 3): a held picture (runs of repeats joined across refreshes under held_mad, lasting
    HELD_MIN_S) is a freeze in any scene, however still the window is and with no catch-up after it.

    frozen_share: share of the window's time spent in freezes (a picture repeated >= FREEZE_MIN_INTERVALS)
    duplicate_share: share of frame pairs that repeat the picture in shorter runs (cadence judder, 3:2 pulldown)
    longest_freeze_s: longest time one picture stayed on screen beyond its normal interval (repeats and gaps)
    stall_share: share of the window's time lost in timestamp gaps > STALL_FACTOR median intervals
    drop_share: frames missing from the timestamps / frames expected (at nominal_fps, else the median rate)
    stutter_cv: coefficient of variation of the frame intervals
    flicker: robust size (luma levels) of the frame-to-frame mean-luma oscillation (second difference)
    judder: robust irregularity of the motion magnitude between moving frames, relative to its median
    """
    t = np.asarray(pts, dtype=np.float64)
    n = len(thumbs)
    if n != len(t):
        raise ValueError(f"thumb_signals got {n} thumbnails but {len(t)} timestamps")
    res = dict.fromkeys(TIMING_MEASUREMENTS, 0.0)
    if n < 3:
        return res
    if changes is None:
        size = thumbs[0].size
        mad = np.array([cv2.norm(thumbs[i], thumbs[i + 1], cv2.NORM_L1) for i in range(n - 1)]) / size
    else:
        mad = np.asarray(changes, dtype=np.float64)
        if len(mad) != n - 1:
            raise ValueError(f"thumb_signals got {len(mad)} changes for {n} thumbnails (want one per pair)")
    luma = np.array([cv2.mean(th)[0] for th in thumbs])
    dt = np.diff(t)
    dt = np.where(dt > 0, dt, np.nan)
    med = float(np.nanmedian(dt)) if np.isfinite(dt).any() else float("nan")
    nominal = 1.0 / nominal_fps if nominal_fps else med
    if not math.isfinite(nominal) or nominal <= 0:
        return res
    dt = np.nan_to_num(dt, nan=0.0)
    span = float(t[-1] - t[0]) + nominal

    changing = mad[mad >= repeat_mad]
    typical = float(np.median(changing)) if changing.size >= 4 else 0.0
    # an encoder refreshes a held picture a little (a few hundredths of a level, more in a busy scene): a pair
    # that changes less than a fifth of the stream's typical change is a repeat too
    same = mad < max(repeat_mad, repeat_share * typical)
    # In a still scene (a static shot, or an encoder that skips every block) repeats are what stillness looks like:
    # only timestamps can show a stall there. Blur and noise cannot fake a repeat: blur leaves a moving
    # presenter's change well above REPEAT_MAD, noise raises it.
    judge_pictures = typical >= still_motion
    held = _held_runs(mad, t, repeat_mad, held_mad) if held_mad > 0 else np.zeros(n - 1, dtype=bool)
    # runs of repeated pictures
    frozen_time = 0.0
    dup_pairs = 0
    longest = 0.0
    i = 0
    while i < n - 1:
        if held[i]:  # a held picture: frozen for as long as it lasts
            j = i
            while j < n - 1 and held[j]:
                j += 1
            shown = (t[j + 1] if j + 1 < n else t[j] + nominal) - t[i]
            frozen_time += shown - nominal
            longest = max(longest, shown - nominal)
            i = j
            continue
        if not same[i]:
            longest = max(longest, dt[i] - nominal)  # a plain timestamp gap is a still picture too
            i += 1
            continue
        j = i
        while j < n - 1 and same[j] and not held[j]:
            j += 1
        if not judge_pictures:
            i = j
            continue
        # pictures i..j are one; it stayed on screen from t[i] until t[j + 1] (or one interval past t[j])
        shown = (t[j + 1] if j + 1 < n else t[j] + nominal) - t[i]
        if j - i >= FREEZE_MIN_INTERVALS:
            # a freeze of a moving scene ends with a jump; a run still open at the window's end counts
            if j + 1 >= n or float(mad[j:j + 3].max()) >= catch_up * typical:
                frozen_time += shown - nominal
                longest = max(longest, shown - nominal)
        else:
            dup_pairs += j - i
            longest = max(longest, shown - nominal)
        i = j
    res["frozen_share"] = min(1.0, frozen_time / span)
    res["duplicate_share"] = dup_pairs / (n - 1)
    res["longest_freeze_s"] = max(0.0, float(longest))

    # each timing event counts once: big gaps are stalls, small ones dropped frames, the rest cadence jitter
    gaps = dt > STALL_FACTOR * nominal
    res["stall_share"] = float(np.sum(dt[gaps] - nominal)) / span
    missing = np.clip(np.round(dt[~gaps] / nominal) - 1.0, 0.0, None)
    res["drop_share"] = float(missing.sum()) / (n + float(missing.sum()))
    pos = dt[(dt > 0) & ~gaps]
    res["stutter_cv"] = float(pos.std() / pos.mean()) if pos.size >= 2 else 0.0

    if n >= 4:
        second = luma[1:-1] - 0.5 * (luma[:-2] + luma[2:])
        res["flicker"] = 1.4826 * float(np.median(np.abs(second)))
    moving = mad[~same]
    if moving.size >= 4:
        m2 = np.abs(moving[1:-1] - 0.5 * (moving[:-2] + moving[2:]))
        res["judder"] = float(np.median(m2) / (np.median(moving) + 0.5))
    return res


def _held_runs(mad: np.ndarray, t: np.ndarray, repeat_mad: float, held_mad: float) -> np.ndarray:
    """Marks the pairs that belong to a held picture: runs of repeats (pairs under repeat_mad) joined across the
    encoder's refreshes of the held picture (at most HELD_GAP_S of pairs each under held_mad), lasting HELD_MIN_S or
    more from the run's first picture to its last."""
    out = np.zeros(len(mad), dtype=bool)
    runs: list[list[int]] = []  # [first pair, last pair + 1]
    i = 0
    while i < len(mad):
        if mad[i] >= repeat_mad:
            i += 1
            continue
        j = i
        while j < len(mad) and mad[j] < repeat_mad:
            j += 1
        if runs and t[i] - t[runs[-1][1]] <= HELD_GAP_S + 1e-6 and bool(np.all(mad[runs[-1][1]:i] < held_mad)):
            runs[-1][1] = j  # a refresh between two runs of repeats: one held picture
        else:
            runs.append([i, j])
        i = j
    for a, b in runs:
        if t[b] - t[a] >= HELD_MIN_S - 1e-6:
            out[a:b] = True
    return out
