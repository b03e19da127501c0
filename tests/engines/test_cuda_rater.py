"""The accelerated torch path for the full model: bucketing and bf16 on the CPU; CUDA graphs and weight-only
quantization of a tiny-config Qwen2-VL stand-in on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines import fvq_rater
from engines.cuda_rater import AcceleratedRater, bucket_for, pad_batch
from engines.prompt import build_tokenizer
from tests.engines.test_fvq_rater import SIGNAL_KEYS, SPEC, random_batch, tiny_qwen2_vl
from train.model import build_full


def full_rater() -> fvq_rater.FVQRater:
    torch.manual_seed(0)
    model = build_full(tiny_qwen2_vl(), build_tokenizer(), SIGNAL_KEYS, image_size=(28, 56),
                       spec=SPEC, projector_hidden=32)
    return fvq_rater.FVQRater(model.eval())


def arrays(spec, b):
    return {k: v.numpy() for k, v in random_batch(spec, b).items()}


def test_buckets_and_padding():
    assert [bucket_for(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 8]
    a = {"x": np.arange(3)}
    assert pad_batch(a, 4)["x"].tolist() == [0, 1, 2, 2]


def test_bf16_bucketed_forward_matches_fp32_on_the_cpu():
    ref = full_rater()
    data = arrays(ref.spec, 5)  # pads to the bucket of 8, split is not needed
    want = ref.predict(data)
    fast = AcceleratedRater(full_rater(), device="cpu", compile="none", buckets=(1, 2, 4, 8))
    got = fast.predict(data)
    assert got["score"].shape == (5,)
    assert np.abs(got["score"] - want["score"]).max() < 0.5  # bf16 on 0..100-scale raw scores


@pytest.mark.gpu
@pytest.mark.parametrize("weight_bits", [None, 8, 4])
def test_cuda_graphs_bf16_and_weight_only_quantization_track_fp32(weight_bits):
    ref = full_rater()
    data = arrays(ref.spec, 6)
    want = ref.predict(data)
    fast = AcceleratedRater(full_rater(), device="cuda", compile="reduce-overhead", buckets=(1, 2, 4, 8),
                            weight_bits=weight_bits, group_size=16)
    fast.warmup()
    got = fast.predict(data)
    tol = {None: 0.5, 8: 1.0, 4: 3.0}[weight_bits]
    assert np.abs(got["score"] - want["score"]).max() < tol
    again = fast.predict(arrays(ref.spec, 3))  # another bucket shape, already recorded
    assert np.isfinite(again["score"]).all()
