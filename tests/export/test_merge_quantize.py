"""LoRA merge parity, checkpoint loading, and weight-only int8 / 4-bit layers (CPU)."""

from __future__ import annotations

import numpy as np
import torch

from engines.lora import lora_layer_count
from export.merge import load_checkpoint, merge_parity
from export.quantize import WeightOnlyLinear, module_bytes, quantize_weights
from tests.engines.test_fvq_rater import random_batch
from tests.export.conftest import tiny_model

MERGE_ATOL = 1e-4  # raw score and level logits, fp32: merging only reorders the same sums


def test_merged_scores_match_the_adapter_scores():
    model = tiny_model()
    assert lora_layer_count(model) > 0
    batch = random_batch(model.config.feature_spec, 4)
    diff = merge_parity(model, batch)
    assert lora_layer_count(model) == 0 and model.config.lora_merged
    assert diff["score"] < MERGE_ATOL and diff["level_logits"] < MERGE_ATOL, diff


def test_merge_changes_weights(checkpoint):
    """The adapters were not zero, so the merged weights differ from the base ones (the parity is not trivial)."""
    merged = load_checkpoint(checkpoint).model
    base = tiny_model()
    name = next(n for n, _ in base.named_parameters() if "q_proj.base_layer.weight" in n)
    merged_w = dict(merged.named_parameters())[name.replace(".base_layer", "")]
    assert (merged_w - dict(base.named_parameters())[name]).abs().max() > 1e-4


def test_checkpoint_with_unmerged_lora_loads_merged(checkpoint):
    rater = load_checkpoint(checkpoint)
    assert lora_layer_count(rater.model) == 0
    reference = tiny_model()
    batch = random_batch(rater.spec, 3)
    with torch.inference_mode():
        want = reference(batch)["score"]
        got = rater.model(batch)["score"]
    assert (want - got).abs().max() < MERGE_ATOL


def test_weight_only_linear_int8_and_int4_error_bounds():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    x = torch.randn(8, 256)
    ref = lin(x)
    for bits, rel in ((8, 0.01), (4, 0.15)):
        q = WeightOnlyLinear(lin, bits=bits, group_size=64)
        err = (q(x) - ref).norm() / ref.norm()
        assert err < rel, (bits, float(err))
        assert q.qweight.numel() * q.qweight.element_size() <= lin.weight.numel() * (bits / 8) + 1


def test_quantize_weights_replaces_llm_layers_and_keeps_scores_close():
    model = tiny_model()
    from engines.lora import merge_and_unload

    merge_and_unload(model)
    batch = random_batch(model.config.feature_spec, 4)
    with torch.inference_mode():
        want = model(batch)["score"].numpy()
    before = module_bytes(model.hf)
    n = quantize_weights(model.hf, bits=8)
    assert n == 7  # q, k, v, o, gate, up, down of the one decoder layer
    assert all(isinstance(m, WeightOnlyLinear) for name, m in model.hf.named_modules() if name.endswith("q_proj"))
    with torch.inference_mode():
        got = model(batch)["score"].numpy()
    assert module_bytes(model.hf) < before
    assert np.abs(got - want).max() < 0.5
