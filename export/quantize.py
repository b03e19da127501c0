"""Quantization: int8 dynamic ONNX graphs for the CPU (tiny), int8 Q/DQ graphs calibrated on the corpus (TensorRT),
and int8 / 4-bit weight-only linear layers for the `full` model on the GPU.

- `quantize_onnx_dynamic`: onnxruntime's quantize_dynamic; weights int8 per output channel, activations
  quantized on the fly. What the CPU runs.
- `quantize_onnx_static`: onnxruntime's quantize_static in the QDQ format, activation ranges from a
  calibration set drawn from the corpus. TensorRT builds int8 engines from explicit Q/DQ graphs (the
  implicit calibrator API is deprecated in TensorRT 10 and removed in 11).
- `quantize_weights` (engines/quantized.py, re-exported): the LLM's nn.Linear layers as `WeightOnlyLinear`
  (int8 per output channel, or int4 per group of input columns, two values a byte), dequantized in forward;
  `engines.quantized.apply_precision` is what a served `full` bundle runs (int8 on the CPU: fbgemm kernels).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from torch import nn

from engines.quantized import WeightOnlyLinear, quantize_weights  # noqa: F401  (re-exported)

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
# Weight-only quantization for the full model (torch): engines/quantized.py (the serving path loads it too)
# ---------------------------------------------------------------------------------------------


def module_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers (what the weights take in memory)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


__all__ = ["WeightOnlyLinear", "module_bytes", "quantize_onnx_dynamic", "quantize_onnx_static", "quantize_weights"]
