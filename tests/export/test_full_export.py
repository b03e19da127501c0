"""fvq export of a `full` rater (no training: a rater built on a tiny base folder, saved as train.fit saves it):
every precision checked and loadable through load_rater; on a GPU, the exported bundle on CUDA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engines import fvq_rater
from engines.base_model import load_base_model
from engines.load import load_rater
from engines.quantized import WeightOnlyLinear, model_bytes
from export.full_export import pixel_arrays, run_full_export
from tests.export.base_folders import save_base_folder
from train.model import build_from_base, save_rater


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full_export")
    base = load_base_model(save_base_folder(tmp / "base", "qwen2_5_vl", "bfloat16"))
    model = build_from_base(base, ("frame.noise_sigma",), projector_hidden=32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # adapters as after training, so the merge changes weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    rater = fvq_rater.FVQRater(model.eval())
    arrays = pixel_arrays(rater.spec, rater.config.spatial_size, rater.config.portrait_size)
    before = rater.predict(arrays)  # adapters unmerged
    checkpoint = tmp / "checkpoint"
    save_rater(rater, checkpoint)  # merged, as train.fit writes it
    out = tmp / "bundle"
    manifest = run_full_export(checkpoint, out, precision="int8", log=lambda s: None)
    return out, manifest, arrays, before


def test_every_precision_is_checked_recorded_and_served_through_load_rater(exported):
    out, manifest, arrays, before = exported
    assert manifest["format_version"] == 2 and manifest["rater"] == {"runtime": "torch", "precision": "int8",
                                                                       "reason": "chosen with --precision"}
    assert set(manifest["precisions"]) == {"bf16", "fp32", "int8", "int4"}
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["parity"]["max_abs"]["bf16"]["score"] < 1e-3  # the stored precision reloads exactly
    assert manifest["model_bytes"]["bf16"] < manifest["model_bytes"]["fp32"]
    served = load_rater(out)  # what fvq score / serve load: the manifest's precision
    assert served.precision == "int8" and served.model.dtype == torch.float32
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in served.model.hf.modules())
    got = served.predict(arrays)
    assert np.abs(got["score"] - before["score"]).max() < 2.0  # merged + int8 vs the adapters in bf16
    from engines.fvq_rater import load_torch_bundle

    int4 = load_torch_bundle(out, on_disk, precision="int4")
    assert sum(isinstance(m, WeightOnlyLinear) and m.bits == 4 for m in int4.model.hf.modules()) == 7
    assert model_bytes(int4.model.hf) < model_bytes(load_torch_bundle(out, on_disk, precision="fp32").model.hf)
    with pytest.raises(ValueError, match="has no precision 'fp16'"):
        load_torch_bundle(out, on_disk, precision="fp16")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
def test_the_exported_full_bundle_on_cuda_tracks_the_cpu(exported, precision):
    out, manifest, arrays, _ = exported
    from engines.fvq_rater import load_torch_bundle

    cpu = load_torch_bundle(out, manifest, precision="bf16").predict(arrays)
    gpu = load_torch_bundle(out, manifest, device="cuda", precision=precision)
    got = gpu.predict(arrays)
    assert np.abs(got["score"] - cpu["score"]).max() < {"bf16": 0.5, "int8": 2.0, "int4": 5.0}[precision]


def test_a_bundle_too_large_for_the_memory_left_is_refused_before_loading(exported):
    from engines.base_model import BaseModelError
    from engines.fvq_rater import check_bundle_memory

    out = exported[0]
    need = check_bundle_memory(out)  # this machine has room for it
    assert need > (out / "model.safetensors").stat().st_size  # weights plus the serving overhead
    with pytest.raises(BaseModelError, match=r"need about .* GiB to serve, and cpu has 0.0 GiB free"):
        check_bundle_memory(out, available=need // 2)
