"""Quantization: int8 dynamic ONNX graphs for the CPU (tiny), int8 Q/DQ graphs calibrated on the corpus (TensorRT),
and int8 / 4-bit weight-only linear layers for the `full` model on the GPU.

- `quantize_onnx_dynamic`: onnxruntime's quantize_dynamic; weights int8 per output channel, activations
  quantized on the fly. What the CPU runs.
- `quantize_onnx_static`: onnxruntime's quantize_static in the QDQ format, activation ranges from a
  calibration set drawn from the corpus. TensorRT builds int8 engines from explicit Q/DQ graphs (the
  implicit calibrator API is deprecated in TensorRT 10 and removed in 11).
- `quantize_weights`: replaces the LLM's nn.Linear layers by `WeightOnlyLinear` (int8 per output channel,
  or int4 with one scale per group of input columns, two values packed per byte), dequantized to the
  activation dtype in forward. Plain torch: no bitsandbytes or torchao (neither is installed here), so it
  saves memory and bandwidth but does not use int8 tensor-core kernels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

# ---------------------------------------------------------------------------------------------
# ONNX (onnxruntime.quantization)
# ---------------------------------------------------------------------------------------------


def quantize_onnx_dynamic(src: Path, dst: Path, op_types: Iterable[str] | None = None) -> Path:
    """int8 dynamic quantization of an ONNX graph (weights per channel, symmetric)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
        op_types_to_quantize=list(op_types) if op_types else None,
        extra_options={"MatMulConstBOnly": True},
    )
    return dst


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
        self._it: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def quantize_onnx_static(src: Path, dst: Path, calibration: Iterable[Mapping[str, np.ndarray]],
                         op_types: Iterable[str] | None = None) -> Path:
    """int8 Q/DQ graph with activation ranges measured on `calibration` feeds (drawn from the corpus)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(src), str(dst), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,  # symmetric int8, what TensorRT takes
        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(op_types) if op_types else None,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return dst


# ---------------------------------------------------------------------------------------------
# Weight-only quantization for the full model (torch)
# ---------------------------------------------------------------------------------------------


class WeightOnlyLinear(nn.Module):
    """A Linear whose weight is stored as int8 (per output channel) or packed int4 (per group of `group_size`
    input columns), dequantized to the input's dtype at every call."""

    def __init__(self, linear: nn.Linear, bits: int = 8, group_size: int = 128) -> None:
        super().__init__()
        if bits not in (8, 4):
            raise ValueError("bits is 8 or 4")
        w = linear.weight.detach().float()
        out_f, in_f = w.shape
        self.bits, self.in_features, self.out_features = bits, in_f, out_f
        if bits == 8:
            scale = w.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127.0
            q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
            self.group_size = in_f
        else:
            g = group_size if in_f % group_size == 0 else in_f
            self.group_size = g
            wg = w.view(out_f, in_f // g, g)
            scale = wg.abs().amax(2, keepdim=True).clamp(min=1e-8) / 7.0
            q = (torch.round(wg / scale).clamp(-8, 7).to(torch.int16) + 8).view(out_f, in_f).to(torch.uint8)
            if in_f % 2:
                raise ValueError(f"4-bit packing needs an even number of input features, got {in_f}")
            q = q[:, 0::2] | (q[:, 1::2] << 4)  # two values a byte
            scale = scale.squeeze(-1)  # (out, groups)
        self.register_buffer("qweight", q.contiguous())
        self.register_buffer("scale", scale.to(torch.float16 if linear.weight.is_cuda else torch.float32))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        if self.bits == 8:
            return (self.qweight.to(dtype) * self.scale.to(dtype))
        lo = (self.qweight & 0x0F).to(torch.int16) - 8
        hi = (self.qweight >> 4).to(torch.int16) - 8
        q = torch.stack([lo, hi], -1).view(self.out_features, self.in_features)
        g = q.view(self.out_features, -1, self.group_size).to(dtype) * self.scale.to(dtype).unsqueeze(-1)
        return g.view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.dequantize(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, group={self.group_size}"


def quantize_weights(module: nn.Module, bits: int = 8, group_size: int = 128,
                     include: tuple[str, ...] = ("layers.",), exclude: tuple[str, ...] = ("lm_head", "visual",
                                                                                          "vision_tower")) -> int:
    """Replaces nn.Linear layers whose qualified name contains one of `include` and none of `exclude` by
    WeightOnlyLinear, in place (the LLM's decoder layers by default). Returns how many were replaced."""
    n = 0
    for name, layer in list(module.named_modules()):
        if not isinstance(layer, nn.Linear) or not any(s in name for s in include) or any(s in name for s in exclude):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, WeightOnlyLinear(layer, bits, group_size).to(layer.weight.device))
        n += 1
    return n


def module_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers (what the weights take in memory)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


__all__ = ["WeightOnlyLinear", "module_bytes", "quantize_onnx_dynamic", "quantize_onnx_static", "quantize_weights"]
