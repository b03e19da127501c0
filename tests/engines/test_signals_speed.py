"""The faster per-frame signal measurements give bit-identical results to the reference code (the shipped forest
was trained on them): engines.signals' own percentile against np.percentile, on real frames."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engines import signals
from engines.signals import blur_noise
from stream.config import AnalysisConfig
from stream.ingest.decode import FrameConverter

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The analysis images (320 px wide, 2 per second) of the two sample clips, as the live path makes them."""
    out = []
    for name in ("clean.mp4", "degraded.mp4"):
        converter = FrameConverter(AnalysisConfig())
        with av.open(str(SAMPLES / name)) as container:
            for frame in container.decode(video=0):
                record = converter.convert(frame)
                if record.image is not None:
                    out.append(record.image)
    assert len(out) >= 30
    return out


def _same(a: dict, b: dict) -> bool:
    """Equal dicts of floats, NaN equal to NaN, bit for bit otherwise."""
    if a.keys() != b.keys():
        return False
    return all((isinstance(a[k], dict) and _same(a[k], b[k])) or a[k] == b[k] or (a[k] != a[k] and b[k] != b[k])
               for k in a)


def test_percentile_is_numpys_bit_for_bit():
    rng = np.random.default_rng(7)
    arrays = [rng.random(n).astype(dt) * 50 for n in (1, 2, 3, 4, 5, 21, 97, 1000, 13333) for dt in (np.float32, np.float64)]
    arrays += [rng.integers(0, 4, 500).astype(np.float32)]  # many ties
    for a in arrays:
        for q in (0, 25, 50, 70.0, 90, 99.5, 100, 100.0 * (1.0 - 20 / max(a.size, 21))):
            mine, numpys = signals._percentile(a, q), np.percentile(a, q)
            assert mine == numpys and type(mine) is type(numpys), (a.size, a.dtype, q, mine, numpys)
    with pytest.raises(ValueError, match="empty"):
        signals._percentile(np.zeros(0, np.float32), 50)


def test_percentile_on_real_gradients_and_residuals(frames):
    """The arrays the measurements take percentiles of (gradient magnitudes and noise residuals of real frames)."""
    for image in frames[::4]:
        y = signals._luma(image)
        coarse = cv2.GaussianBlur(y, (0, 0), signals.COARSE_SIGMA)
        gc = cv2.magnitude(cv2.Sobel(coarse, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(coarse, cv2.CV_32F, 0, 1, ksize=3))
        resid = np.abs(cv2.filter2D(y, cv2.CV_32F, blur_noise._NOISE_KERNEL))
        for a in (gc.ravel(), gc.ravel()[::4], resid.ravel()):
            for q in (25, 70.0, 90, 63.2):
                assert signals._percentile(a, q) == np.percentile(a, q)


def test_frame_signals_identical_to_the_reference(frames, monkeypatch):
    """Every raw measurement of both regions, on every sampled frame of the samples, equals what the code gives
    with numpy's percentile (the code the shipped forest was trained with)."""
    h, w = frames[0].shape[:2]
    box = (w * 0.3, h * 0.15, w * 0.35, h * 0.7)  # a face-sized region in the middle (the presenter's)
    fast = [signals.frame_signals(image, box) for image in frames]
    reference_percentile = lambda a, q: np.percentile(a, q)  # noqa: E731
    monkeypatch.setattr(blur_noise, "_percentile", reference_percentile)  # where the measurements look it up
    reference = [signals.frame_signals(image, box) for image in frames]
    assert all("face" in r and np.isfinite(r["frame"]["noise_sigma"]) for r in reference)
    assert sum(np.isfinite(r["frame"]["edge_blur_px"]) for r in reference) >= len(frames) // 2
    for i, (a, b) in enumerate(zip(fast, reference, strict=True)):
        assert _same(a, b), (i, a, b)
