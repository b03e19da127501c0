"""The TensorRT engine: builds a serialized engine from an ONNX file, caches it on disk, runs it on CUDA tensors.

The cache key is the ONNX file's sha256, the TensorRT version, the GPU model and the precision (plus the
optimization profile and the build options): a plan built for one of them is never loaded for another, a
second start with the same ones reuses the file, and changing any of them builds a new one.

Precisions: `fp32`; `fp16` (TensorRT 10's FP16 builder flag; TensorRT 11 builds strongly typed networks, so
there an fp16 engine needs an fp16 ONNX graph); `int8` from an explicitly quantized (Q/DQ) ONNX graph, whose
activation ranges export/quantize.py measured on a calibration set drawn from the corpus (TensorRT's
implicit int8 calibrators are deprecated in 10 and removed in 11).

`import tensorrt` happens only here; device buffers are torch CUDA tensors, so no pycuda/cuda-python is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import Engine, EngineUnavailableError, Session, file_sha256
from engines.registry import register_engine

KEY = "tensorrt"
INSTALL_HINT = (
    "the tensorrt engine needs an NVIDIA GPU, a CUDA build of torch and TensorRT's Python package: "
    "`pip install tensorrt` (it pulls the CUDA 12 libraries; check `nvidia-smi`), or choose the "
    "`onnxruntime` engine"
)

Profile = Mapping[str, list[list[int]]]  # input name -> [min, opt, max] shapes


def default_cache_dir() -> Path:
    """`$FVQ_CACHE_DIR/tensorrt`, or `~/.cache/fvq-live/tensorrt`."""
    root = os.environ.get("FVQ_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "fvq-live") / "tensorrt"


class TensorRTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp16", description="Engine precision; int8 expects a Q/DQ ONNX graph (export/quantize.py, calibrated on the corpus).")
    device: int = Field(0, ge=0, description="CUDA device index.")
    workspace_mib: int = Field(2048, ge=64, description="Builder workspace memory pool limit.")
    cache_dir: Path | None = Field(None, description="Where built engines are kept (default: $FVQ_CACHE_DIR/tensorrt).")
    max_batch: int = Field(64, ge=1, description="Largest batch of the default optimization profile.")
    profiles: dict[str, dict[str, list[list[int]]]] = Field(
        default_factory=dict,
        description="Per ONNX file stem: input name -> [min, opt, max] shape; dynamic inputs not given get "
                    "batch 1..max_batch with the file's other dimensions.",
    )


# ---------------------------------------------------------------------------------------------
# Cache keys (pure Python: tested without a GPU)
# ---------------------------------------------------------------------------------------------


def cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, precision: str,
              profile: Profile | None = None, options: Mapping[str, Any] | None = None) -> str:
    """A hex digest of everything that makes a built engine valid; any change gives another key."""
    fields = {"onnx_sha256": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name, "precision": precision,
              "profile": {k: [list(map(int, s)) for s in v] for k, v in sorted((profile or {}).items())},
              "options": dict(sorted((options or {}).items()))}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, onnx_path: Path, key: str) -> Path:
    return Path(cache_dir) / f"{Path(onnx_path).stem}-{key[:24]}.plan"


def write_atomic(path: Path, data: bytes, meta: dict[str, Any]) -> None:
    """Writes the plan and its .json description under temporary names and renames them into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, payload in ((path.with_suffix(".json"), json.dumps(meta, indent=2).encode()), (path, data)):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class TensorRTSession(Session):
    """One execution context; inputs are copied to the GPU, outputs back to numpy."""

    def __init__(self, engine, device: int, plan_path: Path, built: bool) -> None:
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self.engine = engine
        self.context = engine.create_execution_context()
        self.device = torch.device("cuda", device)
        self.stream = torch.cuda.Stream(self.device)
        self.plan_path, self.built = plan_path, built
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _torch_dtype(self, name: str):
        np_dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
        return {np.dtype(np.float32): self._torch.float32, np.dtype(np.float16): self._torch.float16,
                np.dtype(np.int8): self._torch.int8, np.dtype(np.uint8): self._torch.uint8,
                np.dtype(np.int32): self._torch.int32, np.dtype(np.int64): self._torch.int64,
                np.dtype(np.bool_): self._torch.bool}[np_dtype]

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        keep = []
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for name in self.input_names:
                t = torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device, non_blocking=True)
                t = t.to(self._torch_dtype(name)).contiguous()
                keep.append(t)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            outs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                o = torch.empty(shape, dtype=self._torch_dtype(name), device=self.device)
                self.context.set_tensor_address(name, o.data_ptr())
                outs.append(o)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.plan_path.name}")
        self.stream.synchronize()
        return [o.float().cpu().numpy() for o in outs]


class TensorRTEngine(Engine):
    KEY = KEY

    def check_available(self) -> None:
        try:
            import tensorrt  # noqa: F401
        except ImportError as exc:
            raise EngineUnavailableError(INSTALL_HINT) from exc
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is a core dependency
            raise EngineUnavailableError(INSTALL_HINT) from exc
        if not torch.cuda.is_available():
            raise EngineUnavailableError("the tensorrt engine needs a CUDA GPU, and torch sees none: " + INSTALL_HINT)

    # -- identity of a build -------------------------------------------------------------------

    def build_identity(self, onnx_path: Path, profile: Profile | None = None) -> dict[str, Any]:
        import tensorrt as trt
        import torch

        cfg: TensorRTConfig = self.config  # type: ignore[assignment]
        return {"onnx_sha256": file_sha256(onnx_path), "trt_version": trt.__version__,
                "gpu_name": torch.cuda.get_device_name(cfg.device), "precision": cfg.precision,
                "profile": dict(profile or cfg.profiles.get(Path(onnx_path).stem, {})),
                "options": {"workspace_mib": cfg.workspace_mib, "max_batch": cfg.max_batch}}

    def plan_for(self, onnx_path: Path, profile: Profile | None = None) -> tuple[Path, dict[str, Any]]:
        cfg: TensorRTConfig = self.config  # type: ignore[assignment]
        ident = self.build_identity(onnx_path, profile)
        key = cache_key(**ident)
        return cache_path(cfg.cache_dir or default_cache_dir(), onnx_path, key), {**ident, "key": key}

    # -- build and load --------------------------------------------------------------------------

    def build(self, onnx_path: Path, profile: Profile) -> bytes:
        import tensorrt as trt

        cfg: TensorRTConfig = self.config  # type: ignore[assignment]
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
        flags = trt.BuilderFlag
        if cfg.precision == "fp16" and hasattr(flags, "FP16"):
            config.set_flag(flags.FP16)
        if cfg.precision == "int8":
            if not _has_qdq(onnx_path):
                raise ValueError(f"{onnx_path} has no Q/DQ nodes: int8 engines are built from the calibrated "
                                 "int8 graph of the bundle (export/quantize.py quantize_onnx_static)")
            if hasattr(flags, "INT8"):
                config.set_flag(flags.INT8)
            if hasattr(flags, "FP16"):
                config.set_flag(flags.FP16)  # layers left in float run in fp16
        opt_profile = builder.create_optimization_profile()
        dynamic = False
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = list(tensor.shape)
            if tensor.name in profile:
                lo, opt, hi = profile[tensor.name]
            elif any(d < 0 for d in shape):
                fixed = [d if d >= 0 else 1 for d in shape]
                lo, opt, hi = fixed, [min(8, cfg.max_batch), *fixed[1:]], [cfg.max_batch, *fixed[1:]]
                if any(d < 0 for d in shape[1:]):
                    raise ValueError(f"{onnx_path}: input {tensor.name} {shape} has dynamic dimensions besides the "
                                     "batch; give its [min, opt, max] shapes in the tensorrt config's profiles")
            else:
                continue
            dynamic = True
            opt_profile.set_shape(tensor.name, tuple(lo), tuple(opt), tuple(hi))
        if dynamic:
            config.add_optimization_profile(opt_profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} at {cfg.precision}")
        return bytes(plan)

    def ensure_plan(self, onnx_path: Path, profile: Profile | None = None) -> tuple[Path, dict[str, Any], bool]:
        """(plan file, its identity, whether it was built now): the cached plan for this ONNX file, TensorRT
        version, GPU and precision, built and written when there is none."""
        plan_path, ident = self.plan_for(onnx_path, profile)
        if plan_path.is_file():
            return plan_path, ident, False
        self.rebuild(plan_path, onnx_path, ident)
        return plan_path, ident, True

    def rebuild(self, plan_path: Path, onnx_path: Path, ident: dict[str, Any]) -> bytes:
        data = self.build(onnx_path, ident["profile"])
        write_atomic(plan_path, data, {**ident, "onnx": str(onnx_path)})
        return data

    def load(self, model_path: Path, profile: Profile | None = None) -> TensorRTSession:
        import tensorrt as trt
        import torch

        cfg: TensorRTConfig = self.config  # type: ignore[assignment]
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {model_path}")
        torch.cuda.set_device(cfg.device)
        plan_path, ident, built = self.ensure_plan(model_path, profile)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if engine is None:  # a damaged file: build again once
            engine, built = runtime.deserialize_cuda_engine(self.rebuild(plan_path, model_path, ident)), True
        session = TensorRTSession(engine, cfg.device, plan_path, built)
        session._runtime = runtime  # the runtime must outlive the engine
        return session


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


register_engine(KEY, TensorRTConfig, TensorRTEngine)

__all__ = ["KEY", "TensorRTConfig", "TensorRTEngine", "TensorRTSession", "cache_key", "cache_path"]

