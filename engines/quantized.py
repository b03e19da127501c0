"""Precisions of the `full` rater's language model in PyTorch: int8 (CPU kernels), 4-bit weight-only, bf16.

- `int8`: torch's dynamic int8 linear layers (fbgemm on x86: weights int8 per output channel, activations
  quantized per batch at run time). The CPU int8 path that is faster than fp32 (BENCHMARKS.md).
- `int4`: `WeightOnlyLinear` with 4-bit weights, one scale per group of input columns, two values a byte,
  dequantized to the activation dtype at every call: an eighth of the fp32 weight memory, but no
  int4 kernel runs it on the CPU, so it is slower there (what it buys is memory and GPU bandwidth).
- `int8_weight_only`: the same with 8-bit weights (the GPU path, engines/cuda_rater.py, uses it).
- `bf16` / `fp32`: the weights cast. Around the quantized layers the model runs in fp32.
Only the LLM's decoder layers are quantized (`layers.`); the vision tower, projectors and heads keep the
stored dtype: they are a small share of the weights and the score is most sensitive to them.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "int8", "int4", "int8_weight_only")
LLM_LAYERS = ("layers.",)
NOT_LLM = ("lm_head", "visual", "vision_tower", "multi_modal_projector")


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


def _llm_linears(module: nn.Module, include=LLM_LAYERS, exclude=NOT_LLM):
    for name, layer in list(module.named_modules()):
        if isinstance(layer, nn.Linear) and any(s in name for s in include) and not any(s in name for s in exclude):
            yield name, layer


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)


def quantize_dynamic_int8(module: nn.Module, include=LLM_LAYERS, exclude=NOT_LLM) -> int:
    """The LLM's linear layers as torch's dynamic int8 layers (per-channel weights; fp32 in and out), in place."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantized tensor constructors deprecated
        for name, layer in _llm_linears(module, include, exclude):
            layer.qconfig = per_channel_dynamic_qconfig
            _replace(module, name, DynamicLinear.from_float(layer.float()))
            n += 1
    return n


def apply_precision(model: nn.Module, precision: str, group_size: int = 128, device: str = "cpu") -> int:
    """Puts an FVQRaterModel's base model (`model.hf`) at `precision`, in place; returns the layers changed.
    The model must be merged (no LoRA branches). On CUDA, int8 is the weight-only layer (fbgemm is CPU-only)."""
    if precision == "int8" and str(device).startswith("cuda"):
        precision = "int8_weight_only"
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    hf = model.hf
    if precision == "bf16":
        model.config.dtype = "bfloat16"
        model.to(torch.bfloat16)
        return 0
    # fp32, and the quantized ones: what is not quantized runs in fp32 (the CPU's int8 kernels take fp32 in)
    model.config.dtype = "float32"
    model.float()
    if precision == "fp32":
        return 0
    if precision == "int8":
        return quantize_dynamic_int8(hf)
    return quantize_weights(hf, bits=4 if precision == "int4" else 8, group_size=group_size)


def model_bytes(module: nn.Module) -> int:
    """Bytes the weights take in memory: parameters and buffers, and the packed weights of dynamic int8 layers
    (which torch keeps outside both)."""
    tensors = list(module.parameters()) + list(module.buffers())
    n = sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())
    for m in module.modules():
        if type(m).__module__.startswith("torch.ao.nn.quantized") and hasattr(m, "weight") and callable(m.weight):
            w = m.weight()
            n += w.numel() * w.element_size() + 8 * w.shape[0]  # int8 values, per-channel scale and zero point
            if m.bias() is not None:
                n += m.bias().numel() * m.bias().element_size()
    return n


__all__ = ["model_bytes", "PRECISIONS", "WeightOnlyLinear", "apply_precision", "quantize_dynamic_int8", "quantize_weights"]
