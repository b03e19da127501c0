"""Pseudo-MOS for synthetic clips: face-weighted full-reference fidelity with freeze penalties, on a fixed 0-100 curve.

The recipe (every constant below is fixed; the same inputs always give the same score):

1. Align on the reference's time grid: at each pristine frame time the viewer sees the last distorted
   frame whose timestamp has passed (a timestamp gap or a repeated frame shows a held frame).
2. Per aligned frame and per pixel, SSIM on luma (BT.601, 11-tap gaussian window, sigma 1.5).
   Chroma fidelity C = 1 / (1 + ((|dCb| + |dCr|) / CHROMA_SCALE)^2) per pixel, so a cast or saturation change
   that SSIM on luma barely sees still costs.
   Pixel quality q = SSIM_WEIGHT * SSIM + (1 - SSIM_WEIGHT) * C.
3. Region means with the soft face mask m: q_face = sum(m q) / sum(m), q_bg = sum((1-m) q) / sum(1-m);
   frame quality Q = FACE_WEIGHT * q_face + (1 - FACE_WEIGHT) * q_bg (0.7 / 0.3: viewers judge faces
   harder than backgrounds, which is why face VQA exists).
4. Temporal factor T = 1 - FROZEN_SHARE_PENALTY * frozen_share - LONGEST_FREEZE_PENALTY * min(longest_s, 1);
   a reference frame counts as frozen when the content on screen is not that frame.
5. raw = mean_t(Q) * T; MOS = 100 / (1 + exp(-(raw - LOGISTIC_CENTRE) / LOGISTIC_SCALE)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from train.distortions import DistortedClip
from train.media import RenderedClip, face_mask

FACE_WEIGHT = 0.7
SSIM_WEIGHT = 0.75
CHROMA_SCALE = 12.0
FROZEN_SHARE_PENALTY = 0.5
LONGEST_FREEZE_PENALTY = 0.15
LOGISTIC_CENTRE = 0.78
LOGISTIC_SCALE = 0.06


@dataclass(frozen=True)
class PseudoMos:
    """The score and the parts it was made from."""

    mos: float
    raw: float
    face: float
    background: float
    temporal: float
    frozen_share: float
    longest_freeze_s: float

    def as_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def logistic(raw: float) -> float:
    return float(100.0 / (1.0 + np.exp(-(raw - LOGISTIC_CENTRE) / LOGISTIC_SCALE)))


def _ycbcr(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = frame.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, 0.564 * (b - y), 0.713 * (r - y)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two float32 luma images (Wang et al. 2004 constants, gaussian window)."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT101)

    mu_a, mu_b = blur(a), blur(b)
    aa, bb, ab = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (aa + bb + c2))


def align(ref: RenderedClip, dist: DistortedClip) -> np.ndarray:
    """For each pristine frame time, the index of the distorted frame on screen."""
    times = np.arange(len(ref.frames)) / ref.fps
    idx = np.searchsorted(dist.pts, times + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(dist.frames) - 1)


def frozen_runs(ref: RenderedClip, dist: DistortedClip) -> tuple[float, float]:
    """(share of time frozen, longest freeze in seconds) on the reference grid."""
    idx = align(ref, dist)
    frozen = dist.shown[idx] != np.arange(len(ref.frames))
    longest = run = 0
    for f in frozen:
        run = run + 1 if f else 0
        longest = max(longest, run)
    return float(frozen.mean()), longest / ref.fps


def pseudo_mos(ref: RenderedClip, dist: DistortedClip, masks: np.ndarray | None = None) -> PseudoMos:
    """Score a distorted clip against its pristine reference (see the module docstring)."""
    width, height = ref.size
    if dist.frames.shape[1:3] != (height, width):
        raise ValueError(f"distorted frames are {dist.frames.shape[1:3]}, reference is {(height, width)}")
    if masks is None:
        masks = face_mask(ref.boxes, width, height)
    idx = align(ref, dist)
    face_q, bg_q = [], []
    for j, i in enumerate(idx):
        ya, cba, cra = _ycbcr(ref.frames[j])
        yb, cbb, crb = _ycbcr(dist.frames[i])
        chroma = 1.0 / (1.0 + ((np.abs(cba - cbb) + np.abs(cra - crb)) / CHROMA_SCALE) ** 2)
        q = SSIM_WEIGHT * ssim_map(ya, yb) + (1 - SSIM_WEIGHT) * chroma
        m = masks[j]
        face_q.append(float((m * q).sum() / max(m.sum(), 1e-6)))
        bg_q.append(float(((1 - m) * q).sum() / max((1 - m).sum(), 1e-6)))
    face, background = float(np.mean(face_q)), float(np.mean(bg_q))
    share, longest = frozen_runs(ref, dist)
    temporal = 1.0 - FROZEN_SHARE_PENALTY * share - LONGEST_FREEZE_PENALTY * min(longest, 1.0)
    raw = (FACE_WEIGHT * face + (1 - FACE_WEIGHT) * background) * temporal
    return PseudoMos(logistic(raw), raw, face, background, temporal, share, longest)


def psnr(ref: np.ndarray, dist: np.ndarray) -> float:
    """Full-frame PSNR (dB) over a whole clip: the MSE of all pixels and channels of all frames."""
    mse = float(np.mean((ref.astype(np.float32) - dist.astype(np.float32)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
