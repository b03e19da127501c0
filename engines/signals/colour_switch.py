"""A colour pipeline switching mid-stream, read between two consecutive sampled pictures of the same scene.

A picture on its own cannot show every broken pipeline: chroma planes read swapped (NV12 as NV21) or channels
swapped (RGB as BGR) turn a blue-skinned avatar into an orange-skinned one, and limited range shown as full is a
faded grade; both are valid pictures. The moment a pipeline switches, though, the same scene shows up under a
colour transform that no light, camera or grade applies. Fitted between two pictures (an affine map of Y, U, V on
the pixels the scene did not move), that transform names the switch:

- a reflection of the chroma plane (its 2x2 block's determinant negative): U and V swapped, or R and B. Every
  change a light, a white balance, a saturation or a hue setting makes keeps the chroma plane's orientation;
- the limited/full range conversion, whose gains the standard fixes: luma x 219/255 and chroma x 224/255 with
  the blacks lifted to 16 (range shown washed out), or the inverse (range crushed).

Two pictures that differ by motion or a cut are no colour transform of each other: the fit leaves most of their
difference, and nothing is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from engines.signals.common import RGB_TO_YUV

SWAP, RANGE_WASHED, RANGE_CRUSHED = "swap", "range_washed", "range_crushed"
# the inverse of each switch (a pipeline switching back)
INVERSE = {SWAP: SWAP, RANGE_WASHED: RANGE_CRUSHED, RANGE_CRUSHED: RANGE_WASHED}

SWITCH_WIDTH = 80  # pictures are compared at this width: motion of a pixel or two and encoder noise average out
KEEP_SHARE = 0.6  # the refit keeps this share of the pixels the first fit explains best: what the scene did not move
MIN_CHANGE = 4.0  # RMS Y'U'V' difference (code values) on the kept pixels below which nothing changed
FIT_SHARE = 0.5  # a transform explains the change when its residual is at most this share of the difference
# (two pictures 0.5 s apart of the origins' moving scenes: 0.86-0.94)
SWAP_DET = -0.25  # the chroma block's determinant at or below which the plane is reflected (a swap gives ~ -1)
# BT.601/709 ranges: luma 16-235 (219 steps of 255), chroma 16-240 (224 steps of 255)
LUMA_RANGE, CHROMA_RANGE = 219 / 255, 224 / 255
RANGE_GAIN_TOL = 0.05  # the luma and chroma gains within this of the standard's
RANGE_OFFSET_TOL = 8.0  # the blacks' offset within this many code values of the standard's 16
MIN_CHROMA_SPREAD = 2.0  # code values of U and V spread below which a picture is grey (a black-and-white film)
RANGE_CHROMA_SHIFT = 4.0  # a range conversion scales chroma about grey: no more shift of it than this (code values)

def _small(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (SWITCH_WIDTH, max(2, round(SWITCH_WIDTH * h / w)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(np.float32)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The affine map (4 x 3: Y, U, V, 1 -> Y', U', V') from x to y by least squares (its normal equations: 4 x 4),
    and each pixel's residual."""
    a = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    m = np.linalg.lstsq(a.T @ a, a.T @ y.astype(np.float64), rcond=None)[0]
    return m, np.sqrt(((a @ m - y) ** 2).sum(1))


def colour_transform(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """The colour transform from `before` to `after` (RGB uint8 pictures of the same size): `change` (RMS Y'U'V'
    difference on the pixels the scene did not move), `fit` (the transform's residual as a share of it),
    `chroma_det` (and `chroma_det_sides`, the larger of the picture's left and right halves', NaN when a half has
    too few pixels), `luma_gain`, `chroma_gain`, `luma_offset` (at black), `chroma_shift` (of grey) and
    `chroma_spread`. Only `change` (over every pixel) when it is under MIN_CHANGE; empty for pictures of different
    sizes."""
    if before.shape != after.shape or before.ndim != 3 or before.shape[2] != 3:
        return {}
    rgb_x, rgb_y = _small(before), _small(after)
    # a channel at either end says nothing of the transform (a strong tint clips one; range crushed clips both ends)
    unclipped = ((rgb_x > 2) & (rgb_x < 253) & (rgb_y > 2) & (rgb_y < 253)).all(1)
    x, y = rgb_x[unclipped] @ RGB_TO_YUV.T, rgb_y[unclipped] @ RGB_TO_YUV.T  # Y 0..255, U and V centred on 0
    left = (np.arange(len(rgb_x)) % SWITCH_WIDTH < SWITCH_WIDTH // 2)[unclipped]
    if len(x) < 64:
        return {}
    change = float(np.sqrt(((y - x) ** 2).sum(1).mean()))
    if change < MIN_CHANGE:  # most pairs: nothing to fit (a switch moves every pixel, so the kept ones too)
        return {"change": change}
    m, resid = _fit(x, y)
    keep = resid <= np.partition(resid, int(KEEP_SHARE * (len(resid) - 1)))[int(KEEP_SHARE * (len(resid) - 1))]
    x, y, left = x[keep], y[keep], left[keep]
    m, resid = _fit(x, y)
    # each half of the picture on its own: a pipeline treats every pixel alike, a stage's gels light each side
    # differently (one such scene's whole picture fits a reflection, neither side does)
    sides = [float(np.linalg.det(_fit(x[half], y[half])[0][1:3, 1:3])) if int(half.sum()) >= 32 else math.nan
             for half in (left, ~left)]
    change = float(np.sqrt(((y - x) ** 2).sum(1).mean()))
    # the gains as ratios of spreads: a least-squares slope shrinks with the noise on its input (the encoder's,
    # a low-chroma photograph's few code values of chroma), a ratio of spreads does not
    sx, sy = x.std(0) + 1e-6, y.std(0)
    luma_gain = float(sy[0] / sx[0])
    return {
        "change": change,
        "fit": float(np.sqrt((resid ** 2).mean())) / max(change, 1e-6),
        "chroma_det": float(np.linalg.det(m[1:3, 1:3])),
        "chroma_det_sides": float(np.max(sides)),  # NaN when a half has too few pixels: no swap is read then
        "luma_gain": luma_gain,
        "chroma_gain": float(math.sqrt(sy[1] * sy[2] / (sx[1] * sx[2]))),
        "chroma_spread": float(min(sx[1], sx[2])),  # the first picture's (a grey picture's: under a code value)
        "luma_offset": float(y[:, 0].mean() - luma_gain * x[:, 0].mean()),
        # what moved grey: a light's or white balance's colour (a range conversion keeps grey grey)
        "chroma_shift": float(np.hypot(*(y[:, 1:].mean(0) - m[1:3, 1:3].T @ x[:, 1:].mean(0)))),
    }


RANGES = ((RANGE_WASHED, LUMA_RANGE, CHROMA_RANGE, 16.0),
          (RANGE_CRUSHED, 1 / LUMA_RANGE, 1 / CHROMA_RANGE, -16.0 / LUMA_RANGE))
# A range conversion's pictures fit less well where the scene moves a lot in the half second between them (a
# crushed range also clips both ends): up to this share, the switch is named when the luma thumbnails of the
# frames between them (every decoded frame's, 33-40 ms apart; 100 ms in the benchmark's 10 fps clips) show the
# conversion's luma gain and blacks' offset at one step, fitting up to this share too (a step the scene only moved
# fits 0.97-0.99 with a gain of ~1), and the pictures its chroma gain.
FIT_SHARE_CONFIRMED = 0.8
LUMA_LOW, LUMA_HIGH = 17, 234  # thumbnail luma read between these (both ranges' clipped ends left out)


def _luma_kind(t: dict[str, float]) -> str | None:
    """The range conversion whose luma gain and blacks' offset `t` shows, if any."""
    for kind, luma, _, offset in RANGES:
        if abs(t["luma_gain"] - luma) <= RANGE_GAIN_TOL * luma and abs(t["luma_offset"] - offset) <= RANGE_OFFSET_TOL:
            return kind
    return None


def _chroma_fits(kind: str, t: dict[str, float]) -> bool:
    """Whether `t`'s chroma moved as range conversion `kind` moves it: scaled about grey by the standard's gain."""
    chroma = next(c for k, _, c, _ in RANGES if k == kind)
    if t["chroma_shift"] > RANGE_CHROMA_SHIFT:
        return False
    # a grey picture has no chroma to scale (its spread is the encoder's noise): grey staying grey is all it shows
    return t["chroma_spread"] < MIN_CHROMA_SPREAD or abs(t["chroma_gain"] - chroma) <= RANGE_GAIN_TOL * chroma


def luma_step(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """The luma transform between two luma thumbnails (uint8, same size): `change`, `fit`, `luma_gain` and
    `luma_offset` as colour_transform reads them (no trimming: 33-40 ms apart, a scene barely moves)."""
    if before.shape != after.shape:
        return {}
    x, y = before.astype(np.float64).ravel(), after.astype(np.float64).ravel()
    # the coded luma's ends: 0 and 255 in full range, 16 and 235 in limited range (a crushed range clips there)
    ok = (x > LUMA_LOW) & (x < LUMA_HIGH) & (y > LUMA_LOW) & (y < LUMA_HIGH)
    x, y = x[ok], y[ok]
    if len(x) < 64:
        return {}
    change = float(np.sqrt(((y - x) ** 2).mean()))
    if change < MIN_CHANGE:
        return {"change": change}
    a = np.stack([x, np.ones_like(x)], 1)
    m = np.linalg.lstsq(a, y, rcond=None)[0]
    gain = float(y.std() / max(float(x.std()), 1e-6))
    return {"change": change, "fit": float(np.sqrt(((a @ m - y) ** 2).mean())) / change, "luma_gain": gain,
            "luma_offset": float(y.mean() - gain * x.mean())}


def colour_switch(before: np.ndarray, after: np.ndarray, thumbs: Sequence[np.ndarray] = ()) -> str | None:
    """SWAP, RANGE_WASHED or RANGE_CRUSHED when `after` is `before` through that switch, else None. `thumbs`: the
    luma thumbnails of the frames from `before` to `after`, in order (they confirm a range conversion the pictures
    fit less well, see FIT_SHARE_CONFIRMED)."""
    t = colour_transform(before, after)
    if not t or t["change"] < MIN_CHANGE or t["fit"] > FIT_SHARE_CONFIRMED:
        return None
    if t["fit"] <= FIT_SHARE:
        # a grey picture has no chroma to reflect: its chroma block is fitted to the encoder's noise
        reflected = t["chroma_det"] <= SWAP_DET and t["chroma_det_sides"] <= SWAP_DET
        if reflected and t["chroma_spread"] >= MIN_CHROMA_SPREAD:
            return SWAP
        kind = _luma_kind(t)
        if kind is not None and _chroma_fits(kind, t):
            return kind
    # the pictures fit less well (the scene moved a lot): a frame step between them shows the conversion on luma,
    # the pictures its chroma (their luma gain is bent by what moved, their chroma spread much less)
    for a, b in zip(thumbs, thumbs[1:], strict=False):
        step = luma_step(a, b)
        if (step.get("fit", math.inf) <= FIT_SHARE_CONFIRMED and (kind := _luma_kind(step)) is not None
                and _chroma_fits(kind, t)):
            return kind
    return None
