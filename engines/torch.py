"""The PyTorch engine: runs TorchScript files, or modules handed to it, on the CPU or a CUDA device."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import Engine, EngineUnavailableError, Session
from engines.registry import register_engine

KEY = "torch"


class TorchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the model runs.")
    threads: int = Field(1, ge=0, description="torch intra-op threads on the CPU (0: torch's default).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Compute precision.")


class TorchSession(Session):
    def __init__(self, module, input_names: list[str], output_names: list[str], device: str, dtype) -> None:
        self.module = module
        self.input_names = input_names
        self.output_names = output_names
        self.device = device
        self.dtype = dtype

    def run(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        args = []
        for name in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self.device)
            args.append(t.to(self.dtype) if t.is_floating_point() else t)
        with torch.inference_mode():
            out = self.module(*args)
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.float().cpu().numpy() for o in outs]


class TorchEngine(Engine):
    KEY = KEY

    def check_available(self) -> None:
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is a core dependency
            raise EngineUnavailableError("the torch engine needs `pip install torch`") from exc
        cfg: TorchConfig = self.config  # type: ignore[assignment]
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise EngineUnavailableError(
                "the torch engine was configured with device=cuda but torch sees no CUDA GPU "
                "(install a CUDA build of torch and check `nvidia-smi`)"
            )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

    def _dtype(self):
        import torch

        return getattr(torch, self.config.dtype)  # type: ignore[attr-defined]

    def wrap(self, module, input_names: list[str], output_names: list[str]) -> TorchSession:
        """A session over a module already built in Python."""
        module = module.to(self.config.device).to(self._dtype()).eval()  # type: ignore[attr-defined]
        return TorchSession(module, input_names, output_names, self.config.device, self._dtype())  # type: ignore[attr-defined]

    def load(self, model_path: Path) -> TorchSession:
        import torch

        if not Path(model_path).is_file():
            raise FileNotFoundError(f"TorchScript model not found: {model_path}")
        module = torch.jit.load(str(model_path), map_location=self.config.device)  # type: ignore[attr-defined]
        names = [a.name for a in module.forward.schema.arguments[1:]]
        return self.wrap(module, names, ["output"])


register_engine(KEY, TorchConfig, TorchEngine)
