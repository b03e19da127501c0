"""The ONNX Runtime engine: CPU here, CUDA or TensorRT execution providers where onnxruntime-gpu has them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import Engine, EngineUnavailableError, Session
from engines.registry import register_engine

KEY = "onnxruntime"


class OnnxRuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        default_factory=lambda: ["cpu"],
        description="Execution providers in order of preference; those this onnxruntime lacks are skipped.",
    )
    intra_op_threads: int = Field(1, ge=0, description="Threads per operator (0: onnxruntime's default).")
    inter_op_threads: int = Field(1, ge=0, description="Threads across operators (0: onnxruntime's default).")
    memory_arena: bool = Field(
        False,
        description="onnxruntime's own CPU memory arena. It grows to the largest batch a session has run and never "
        "shrinks (a 16-frame batch left the face models ~270 MiB); off, tensors go back to the C allocator.",
    )


_PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeSession(Session):
    def __init__(self, session) -> None:  # onnxruntime.InferenceSession
        self._session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.providers = session.get_providers()

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, dict(inputs))


class OnnxRuntimeEngine(Engine):
    KEY = KEY

    def check_available(self) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
            raise EngineUnavailableError("the onnxruntime engine needs `pip install onnxruntime`") from exc

    def load(self, model_path: Path) -> OnnxRuntimeSession:
        import onnxruntime as ort

        cfg: OnnxRuntimeConfig = self.config  # type: ignore[assignment]
        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.intra_op_threads
        options.inter_op_num_threads = cfg.inter_op_threads
        options.enable_cpu_mem_arena = cfg.memory_arena
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        available = set(ort.get_available_providers())
        providers = [_PROVIDER_NAMES[p] for p in cfg.providers if _PROVIDER_NAMES[p] in available]
        if "CPUExecutionProvider" not in providers:
            providers.append("CPUExecutionProvider")
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"ONNX model not found: {model_path}")
        return OnnxRuntimeSession(ort.InferenceSession(str(model_path), options, providers=providers))


register_engine(KEY, OnnxRuntimeConfig, OnnxRuntimeEngine)
