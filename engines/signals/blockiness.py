"""Compression artifacts: blocking on the codec's 8x8 grid, and the decoder's quantiser where it is known."""

from __future__ import annotations

import numpy as np

BLOCK_STEP_CLIP = 12.0  # luma levels: a step across a block edge bigger than this is an edge, not blocking


BLOCK = 8  # codec transform block size at analysis resolution (JPEG, MPEG-2, H.264 8x8 / half a macroblock)


def _blockiness(y: np.ndarray) -> float:
    """Excess luma step across the 8x8 grid over the steps inside blocks (0 = none), both directions.

    Steps are clipped at BLOCK_STEP_CLIP levels (bigger ones are edges, not blocking, and would let texture
    dominate), averaged down each column, folded by grid phase with a median over the block columns (so a
    letterbox edge or one strong line cannot fake a grid); the grid's phase is the strongest one and its excess is measured over the next strongest.
    """
    out = []
    for d in (np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0)).T):
        n = d.shape[1] // BLOCK * BLOCK
        if n < 2 * BLOCK:
            continue
        col = np.minimum(d[:, :n], BLOCK_STEP_CLIP).mean(axis=0)
        prof = np.median(col.reshape(-1, BLOCK), axis=0)
        srt = np.sort(prof)
        # a real grid has one phase standing out; chance texture lifts the top two phases alike
        out.append(float(srt[-1] - srt[-2]) / (float(srt[:-1].mean()) + 1.0))
    return float(np.mean(out)) if out else float("nan")


def add_quantiser(signals: dict[str, dict[str, float]], qp_map: np.ndarray, image_hw: tuple[int, int],
                  face_box: tuple[float, float, float, float] | None) -> None:
    """Adds the mean decoder quantiser of the frame, and of the macroblocks under the face, as raw `qp`."""
    signals["frame"]["qp"] = float(qp_map.mean())
    if face_box is not None and "face" in signals:
        rows, cols = qp_map.shape
        h, w = image_hw
        x, y, bw, bh = face_box
        c0, c1 = int(max(0, x) * cols / w), int(np.ceil(min(w, x + bw) * cols / w))
        r0, r1 = int(max(0, y) * rows / h), int(np.ceil(min(h, y + bh) * rows / h))
        if c1 > c0 and r1 > r0:
            signals["face"]["qp"] = float(qp_map[r0:r1, c0:c1].mean())
