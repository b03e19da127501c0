"""The PyTorch GPU path for the `full` rater: bf16 LLM, static batch shapes, CUDA graphs, windows batched across streams.

- bf16: the transformers model (LLM and vision tower) holds bf16 weights and the forward runs under autocast,
  so the projectors' LayerNorms and the heads stay in fp32 where the model casts to float on purpose.
- Static shapes: a batch of windows is padded (repeating its last window) up to the next bucket size, so
  every call sees one of a few shapes; the sequence length is fixed by the prompt template already.
- `compile="reduce-overhead"`: torch.compile per bucket with CUDA graphs (the launch overhead of a small
  decoder dominates at small batches); `warmup()` compiles and records every bucket before the first window.
- `weight_bits=8|4`: int8 / 4-bit weight-only LLM layers (engines/quantized.py WeightOnlyLinear).

Device-agnostic apart from CUDA graphs: on the CPU it runs the same code in bf16 (used by the CPU tests);
the CUDA numbers come from a GPU machine (BENCHMARKS.md says which were measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from engines.features import FrameRecord
from engines.rater import Rater, WindowFeatures

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds n windows (the largest bucket when n exceeds it: callers split)."""
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]


def pad_batch(arrays: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads every array's batch axis to `size` by repeating the last window."""
    n = len(next(iter(arrays.values())))
    if n == size:
        return arrays
    idx = np.minimum(np.arange(size), n - 1)
    return {k: v[idx] for k, v in arrays.items()}


class AcceleratedRater(Rater):
    """Wraps an FVQRater: same frame features, calibration, prior and dimension heads, a faster forward."""

    def __init__(self, rater, device: str = "cuda", dtype: str = "bfloat16",
                 compile: Literal["none", "reduce-overhead", "max-autotune"] = "reduce-overhead",
                 buckets: Sequence[int] = DEFAULT_BUCKETS, weight_bits: int | None = None, group_size: int = 128) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("the CUDA rater needs a CUDA GPU, and torch sees none (install a CUDA build of torch)")
        self.base = rater
        self.spec = rater.spec
        self.prior = rater.prior
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.buckets = tuple(sorted(buckets))
        model = rater.model.eval()
        if getattr(model, "lora_injected", False):
            from engines.lora import merge_and_unload

            merge_and_unload(model)
        model.hf.to(self.dtype)
        if weight_bits:
            from engines.quantized import quantize_weights

            self.quantized_layers = quantize_weights(model.hf, bits=weight_bits, group_size=group_size)
        model.to(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        use_compile = compile != "none" and self.device.type == "cuda"
        self._forward = torch.compile(model, mode=compile, dynamic=False, fullgraph=False) if use_compile else model

    # -- Rater -------------------------------------------------------------------------------------

    @property
    def rates_dimensions(self) -> bool:  # type: ignore[override]
        return self.base.rates_dimensions

    @property
    def dimension_heads(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.base.dimension_heads

    def frame_features(self, records: list[FrameRecord]) -> None:
        self.base.frame_features(records)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return self.base.calibrate(raw)

    @torch.inference_mode()
    def predict(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(arrays["signals"])
        top = self.buckets[-1]
        outs: list[dict[str, np.ndarray]] = []
        for s in range(0, n, top):
            part = {k: v[s:s + top] for k, v in arrays.items()}
            m = len(part["signals"])
            padded = pad_batch(part, bucket_for(m, self.buckets))
            batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device, non_blocking=True)
                     for k, v in padded.items()}
            with torch.autocast(self.device.type, dtype=self.dtype):
                out = self._forward(batch)
            outs.append({k: v[:m].float().cpu().numpy() for k, v in out.items()})
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def warmup(self) -> None:
        """Compiles and records every bucket shape once (first calls of torch.compile are slow)."""
        from engines.fvq_model import example_rater_inputs

        for b in self.buckets:
            arrays = {k: t.numpy() for k, t in zip(WindowFeatures.ARRAYS, example_rater_inputs(self.spec, b),
                                                    strict=True)}
            if len(self.spec.spatial_shape) == 3:  # pixels: uint8 frames
                for k in ("spatial", "portrait"):
                    shape = (b, self.spec.frames, *(self.spec.spatial_shape if k == "spatial" else self.spec.portrait_shape))
                    arrays[k] = np.zeros(shape, np.uint8)
            self.predict(arrays)


__all__ = ["DEFAULT_BUCKETS", "AcceleratedRater", "bucket_for", "pad_batch"]
