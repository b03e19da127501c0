"""Blur and noise: the two-scale edge-blur estimator, flat-area noise (Immerkaer) and correlated grain."""

from __future__ import annotations

import math

import cv2
import numpy as np

from engines.signals.common import BRIGHT_LEVEL, DARK_LEVEL, _percentile

FINE_SIGMA = 1.0  # px, the fine scale of the two-scale edge-blur estimator


COARSE_SIGMA = 2.0  # px, its coarse scale


MIN_EDGES = 20  # fewer edge pixels than this and the blur of a region is unknown (NaN)


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)  # Immerkaer 1996, |k|_2 = 6


def _robust_sigma(resid: np.ndarray) -> float:
    """Gaussian sigma behind |Immerkaer residuals|: mean after clipping at the 90th percentile (texture and
    edges that slipped into the selection cannot pull it up), divided by that statistic's value for N(0, 1)."""
    if resid.size == 0:
        return float("nan")
    top = float(_percentile(resid, 90))
    return float(np.minimum(resid, top).mean()) / (0.756 * 6.0)


def _noise_and_blur(y: np.ndarray) -> dict[str, float]:
    """Noise sigma in flat areas, edge blur width at strong edges, ringing around them."""
    coarse = cv2.GaussianBlur(y, (0, 0), COARSE_SIGMA)
    fine = cv2.GaussianBlur(y, (0, 0), FINE_SIGMA)
    gc = cv2.magnitude(cv2.Sobel(coarse, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(coarse, cv2.CV_32F, 0, 1, ksize=3))
    gf = cv2.magnitude(cv2.Sobel(fine, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(fine, cv2.CV_32F, 0, 1, ksize=3))
    resid = np.abs(cv2.filter2D(y, cv2.CV_32F, _NOISE_KERNEL))

    # Noise: median residual over the flattest quarter of the (unclipped) pixels. The flatness test runs on
    # the coarse image so the selection is not itself driven by the noise it measures.
    unclipped = (coarse > DARK_LEVEL + 4) & (coarse < BRIGHT_LEVEL - 4)
    gc_u = gc[unclipped]
    if gc_u.size >= 64:
        flat = unclipped & (gc <= _percentile(gc_u[::4], 25))
        noise = _robust_sigma(resid[flat])
    else:
        noise = float("nan")

    # Blur: ratio of fine to coarse gradient at ridge pixels of strong coarse edges. For a step blurred by
    # s, the ratio is sqrt(s^2 + c^2) / sqrt(s^2 + f^2) (c, f: the effective scales), which is independent
    # of the edge's contrast; we invert it for s in pixels.
    ridge = gc >= cv2.dilate(gc, np.ones((3, 3), np.uint8))
    floor = 4.0 + 3.0 * (noise if math.isfinite(noise) else 0.0)
    cand = gc[ridge]
    cand = cand[cand > floor]
    edge_blur = float("nan")
    ringing = float("nan")
    if cand.size >= MIN_EDGES:
        # the strongest 30% of the edge pixels, but at least MIN_EDGES of them
        q = min(70.0, 100.0 * (1.0 - MIN_EDGES / cand.size))
        thr = max(floor, float(_percentile(cand, q)))
        sel = ridge & (gc >= thr)
        if int(sel.sum()) >= MIN_EDGES:
            r = float(np.median(cv2.dilate(gf, np.ones((3, 3), np.uint8))[sel] / gc[sel]))
            f2, c2 = _EFF_FINE**2, _EFF_COARSE**2
            r2 = max(r * r, 1.0 + 1e-6)
            s2 = (c2 - r2 * f2) / (r2 - 1.0)
            edge_blur = math.sqrt(max(s2, 0.0) + _INTRINSIC**2)
            # Ringing: residual energy in a band 2-4 px from strong edges, relative to the flat-area noise.
            near = cv2.dilate(sel.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
            core = cv2.dilate(sel.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            band = near & ~core & (gc < 0.5 * thr)
            if int(band.sum()) >= MIN_EDGES:
                ringing = _robust_sigma(resid[band]) / (noise + 0.5)
    return {"edge_blur_px": edge_blur, "noise_sigma": noise, "ringing": ringing}


# Effective scales of Gaussian + Sobel + pixel sampling, fitted on synthetic blurred steps (see docs/signals.md).
_EFF_FINE = 1.15


_EFF_COARSE = 2.08


_INTRINSIC = 0.0


GRAIN_MIN_PX = 96  # smaller regions (a small face crop) have too few flat pixels at half size: texture reads as grain


def _grain_sigma(y: np.ndarray) -> float:
    """Noise that is correlated over neighbouring pixels (sensor grain after demosaicing, denoised or re-encoded
    noise), which the 3x3 estimator on the full image under-reads: the same flat-area estimator on the luma
    area-downscaled 2x, times 2 (white noise reads the same at both scales; correlated grain reads higher here)."""
    h, w = y.shape
    if min(h, w) < GRAIN_MIN_PX:
        return float("nan")
    half = cv2.resize(y, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    coarse = cv2.GaussianBlur(half, (0, 0), COARSE_SIGMA)
    gc = cv2.magnitude(cv2.Sobel(coarse, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(coarse, cv2.CV_32F, 0, 1, ksize=3))
    unclipped = (coarse > DARK_LEVEL + 4) & (coarse < BRIGHT_LEVEL - 4)
    gc_u = gc[unclipped]
    if gc_u.size < 64:
        return float("nan")
    flat = unclipped & (gc <= _percentile(gc_u, 25))
    resid = np.abs(cv2.filter2D(half, cv2.CV_32F, _NOISE_KERNEL))
    return 2.0 * _robust_sigma(resid[flat])


STATIC_LEVEL = 1.0  # luma levels: where two pictures' coarse (sigma 2) images differ less than this, nothing moved
MIN_STATIC_PX = 400  # fewer static, unclipped pixels than this and the temporal grain is unknown (NaN)
# A camera that pans, or a still that drifts, moves the whole picture by a pixel or less between two sampled
# pictures: the coarse picture barely changes (so most pixels count as static), but the fine detail of a textured
# photograph moves and read as grain that changes (biden's still from face_recognition, clean: 1.85 levels, 2.45
# high-key, where clean pictures read 0.7-1.0, so four of its clean looks raised `camera`). The two pictures are
# aligned first by the global shift phase correlation finds on the luma (a Hann window: the borders' jump biased
# it towards no shift, 1 px read as 0.69), each moved half of it so both lose the same share of their fine detail
# to the interpolation, and the grain is divided by that share. Measured on the analysis path: biden 1.85 -> 1.16,
# high-key 2.45 -> 1.26; a low-key noise ladder's sigma 4 and 8 read 2.24 and 4.43 aligned (2.26 before at 4).
ALIGN_MIN_SHIFT = 0.1  # px: below this the pictures are taken as aligned
ALIGN_MAX_SHIFT = 8.0  # px: a larger shift is a cut or fast motion, where nothing is static anyway


def _align_halfway(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray):
    """(a, b, ca, cb, gain) with b's global shift against a taken out (each moved half of it, borders cropped) and the
    factor the interpolation lowered white noise's sigma by; the inputs and 1.0 where the shift is negligible."""
    window = cv2.createHanningWindow((ca.shape[1], ca.shape[0]), cv2.CV_64F)  # borders weigh nothing
    (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float64), b.astype(np.float64), window)
    if not ALIGN_MIN_SHIFT <= math.hypot(dx, dy) < ALIGN_MAX_SHIFT:
        return a, b, ca, cb, 1.0
    h, w = a.shape
    m = int(math.ceil(max(abs(dx), abs(dy)))) + 2
    if h <= 4 * m or w <= 4 * m:
        return a, b, ca, cb, 1.0

    def moved(img: np.ndarray, sx: float, sy: float) -> np.ndarray:
        shifted = cv2.warpAffine(img, np.float32([[1, 0, sx], [0, 1, sy]]), (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        return np.ascontiguousarray(shifted[m:h - m, m:w - m])

    fx, fy = abs(dx / 2) % 1.0, abs(dy / 2) % 1.0
    gain = math.sqrt(((1 - fx) ** 2 + fx ** 2) * ((1 - fy) ** 2 + fy ** 2))  # bilinear weights' norm
    return (moved(a, dx / 2, dy / 2), moved(b, -dx / 2, -dy / 2), moved(ca, dx / 2, dy / 2),
            moved(cb, -dx / 2, -dy / 2), gain)


def temporal_grain(a: np.ndarray, b: np.ndarray) -> float:
    """Noise that changes between two pictures of the stream at the same place (sensor grain is new in every picture;
    texture, and blocks a live encoder held, are not): the sigma of the difference of the two pictures' fine detail
    (luma minus its sigma-2 blur) on the flatter half of the pixels where the coarse picture did not move, from its
    median absolute value. A live encoder smooths strong grain into blocks, so the spatial estimators barely read it
    (grain_sigma 1.1 -> 2.9 levels); the grain it keeps still changes from picture to picture (0.7-0.9 -> 2.4-2.6
    here, a starved encoder 0.0-0.3). The pictures are aligned first when the whole picture moved (_align_halfway).
    NaN for pictures of different sizes or without enough static pixels."""
    if a.shape != b.shape:
        return float("nan")
    ca = cv2.GaussianBlur(a, (0, 0), COARSE_SIGMA)
    cb = cv2.GaussianBlur(b, (0, 0), COARSE_SIGMA)
    a, b, ca, cb, gain = _align_halfway(a, b, ca, cb)
    static = (np.abs(ca - cb) < STATIC_LEVEL) & (ca > DARK_LEVEL + 4) & (ca < BRIGHT_LEVEL - 4)
    if int(static.sum()) < MIN_STATIC_PX:
        return float("nan")
    gc = cv2.magnitude(cv2.Sobel(ca, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(ca, cv2.CV_32F, 0, 1, ksize=3))
    flat = static & (gc <= _percentile(gc[static], 50))
    diff = np.abs((a - ca) - (b - cb))[flat]
    return 1.4826 * float(_percentile(diff, 50)) / math.sqrt(2.0) / gain
