"""The TensorRT engine: the missing-library error and the plan cache run anywhere; builds need a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engines.base import EngineUnavailableError
from engines.registry import create_engine
from engines.tensorrt import TensorRTConfig, TensorRTEngine, cache_key, cache_path

BASE = {"onnx_sha256": "a" * 64, "trt_version": "10.9.0", "gpu_name": "NVIDIA H100 80GB HBM3", "precision": "fp16"}


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_choosing_tensorrt_without_the_library_fails_at_start_up_saying_what_to_install():
    with pytest.raises(EngineUnavailableError, match=r"pip install tensorrt"):
        create_engine("tensorrt", {"precision": "fp16"})


def test_config_rejects_unknown_fields_and_precisions():
    with pytest.raises(ValueError, match="precison"):
        TensorRTConfig.model_validate({"precison": "fp16"})
    with pytest.raises(ValueError, match="precision"):
        TensorRTConfig.model_validate({"precision": "fp8"})


def test_cache_key_changes_with_each_field_and_only_then():
    key = cache_key(**BASE)
    assert key == cache_key(**dict(reversed(list(BASE.items()))))
    for field, other in (("onnx_sha256", "b" * 64), ("trt_version", "10.10.0"),
                         ("gpu_name", "NVIDIA H200"), ("precision", "int8")):
        assert cache_key(**{**BASE, field: other}) != key, field
    assert cache_key(**BASE, profile={"x": [[1, 3], [8, 3], [64, 3]]}) != key
    assert cache_key(**BASE, options={"workspace_mib": 1024}) != key
    assert cache_path(Path("/c"), Path("/b/rater.onnx"), key) == Path(f"/c/rater-{key[:24]}.plan")


class FakeTensorRT(TensorRTEngine):
    """The plan cache logic with the GPU-facing parts replaced: identity from fields, build counts calls."""

    gpu = "NVIDIA H100"
    version = "10.9.0"

    def __init__(self, config):
        super().__init__(config)
        self.builds = 0

    def build_identity(self, onnx_path, profile=None):
        from engines.base import file_sha256 as onnx_sha256

        return {"onnx_sha256": onnx_sha256(onnx_path), "trt_version": self.version, "gpu_name": self.gpu,
                "precision": self.config.precision, "profile": dict(profile or {}), "options": {}}

    def build(self, onnx_path, profile):
        self.builds += 1
        return b"plan:" + self.config.precision.encode()


def test_plans_are_reused_on_the_next_start_and_rebuilt_when_anything_changes(tmp_path):
    onnx = tmp_path / "rater.onnx"
    onnx.write_bytes(b"graph-1")
    cfg = TensorRTConfig(precision="fp16", cache_dir=tmp_path / "cache")
    first = FakeTensorRT(cfg)
    path, ident, built = first.ensure_plan(onnx)
    assert built and path.read_bytes() == b"plan:fp16" and path.with_suffix(".json").is_file()
    second = FakeTensorRT(cfg)  # a new process start
    assert second.ensure_plan(onnx)[2] is False and second.builds == 0
    onnx.write_bytes(b"graph-2")  # a new export
    assert second.ensure_plan(onnx)[2] is True
    upgraded = FakeTensorRT(cfg)
    upgraded.version = "10.10.0"
    assert upgraded.ensure_plan(onnx)[2] is True
    other_gpu = FakeTensorRT(cfg)
    other_gpu.gpu = "NVIDIA L4"
    assert other_gpu.ensure_plan(onnx)[2] is True
    int8 = FakeTensorRT(TensorRTConfig(precision="int8", cache_dir=tmp_path / "cache"))
    p8, _, built8 = int8.ensure_plan(onnx)
    assert built8 and p8 != path and p8.read_bytes() == b"plan:int8"
    assert len(list((tmp_path / "cache").glob("*.plan"))) == 5


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "int8_qdq"])
def test_tensorrt_runs_the_exported_graphs_near_onnxruntime_and_reuses_its_plans(exported, tmp_path, precision):
    pytest.importorskip("tensorrt", reason="TensorRT's Python package is not installed on this GPU machine")
    from engines.bundle import verify_bundle
    from engines.onnx_rater import OnnxRater
    from export.parity import real_face_frames, window_arrays

    manifest = verify_bundle(exported)  # exported without a corpus: Q/DQ calibrated on the real parity frames
    trt_precision = "int8" if precision.startswith("int8") else precision
    config = {"precision": trt_precision, "cache_dir": str(tmp_path / "plans")}
    trt = OnnxRater(exported, manifest, runtime="tensorrt", precision=precision, engine_config=config)
    assert trt.session.built
    ref = OnnxRater(exported, manifest, runtime="onnxruntime", precision="fp32")
    frames = real_face_frames(8)
    cfg = manifest["graphs"]["encoder"]["sizes"]
    arrays = window_arrays(ref.encode, ref.spec, frames, cfg["spatial"], cfg["portrait"])
    got, want = trt.predict(arrays), ref.predict(arrays)
    tol = 0.05 if trt_precision == "fp16" else 0.5
    assert np.abs(trt.calibrate(got["score"]) - ref.calibrate(want["score"])).max() < tol * 100
    again = OnnxRater(exported, manifest, runtime="tensorrt", precision=precision, engine_config=config)
    assert not again.session.built and not again.encoder.built
