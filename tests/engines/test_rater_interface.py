"""The rater interface: one rating implementation over each runtime's forward, and what every rater states."""

from __future__ import annotations

import numpy as np
import torch

from engines import fvq_rater
from engines.cuda_rater import AcceleratedRater
from engines.features import DIMENSIONS, LEVELS
from engines.frame_encoders import PixelFrameEncoder
from engines.onnx_rater import OnnxRater
from engines.rater import Rater, WindowFeatures
from tests.engines.test_fvq_rater import SIGNAL_KEYS, SPEC, random_batch
from train.model import build_tiny


def tiny_rater(rates_dimensions: bool) -> fvq_rater.FVQRater:
    torch.manual_seed(0)
    model = build_tiny(SIGNAL_KEYS, hidden=32, layers=1, heads=2, spec=SPEC, projector_hidden=32,
                       rates_dimensions=rates_dimensions)
    model.merge_lora()
    return fvq_rater.FVQRater(model.eval(), encoder=PixelFrameEncoder((28, 28), (28, 28)))


def window_features(spec, b: int) -> list[WindowFeatures]:
    arrays = {k: v.numpy() for k, v in random_batch(spec, b).items()}
    return [WindowFeatures("s", float(i), float(i) + 4, **{k: arrays[k][i] for k in WindowFeatures.ARRAYS})
            for i in range(b)]


def test_rate_is_written_once_and_every_runtime_supplies_only_its_forward():
    for cls in (fvq_rater.FVQRater, OnnxRater, AcceleratedRater):
        assert cls.rate is Rater.rate, f"{cls.__name__} rates windows its own way again"
        assert cls.predict is not Rater.predict


def test_the_accelerated_rater_carries_the_dimension_heads_and_rates_as_its_base():
    base = tiny_rater(rates_dimensions=True)
    base.dimension_heads = ("blur", "temporal")  # what load() reads from the manifest
    fast = AcceleratedRater(base, device="cpu", dtype="float32", compile="none", buckets=(1, 2, 4))
    assert fast.dimension_heads == ("blur", "temporal") and fast.rates_dimensions
    features = window_features(base.spec, 3)
    want, got = base.rate(features), fast.rate(features)
    assert [r.level for r in got] == [r.level for r in want]
    assert np.allclose([r.score for r in got], [r.score for r in want], atol=1e-4)
    assert all(r.level in LEVELS and abs(float(r.level_probs.sum()) - 1) < 1e-5 for r in got)
    assert all(list(r.dimensions) == list(DIMENSIONS) for r in got)  # the dimension head is rated


def test_a_rater_without_a_trained_dimension_head_rates_no_dimensions():
    rater = tiny_rater(rates_dimensions=False)
    assert rater.dimension_heads == () and not rater.rates_dimensions
    ratings = rater.rate(window_features(rater.spec, 2))
    assert len(ratings) == 2 and all(r.dimensions is None for r in ratings)
    assert rater.rate([]) == []
