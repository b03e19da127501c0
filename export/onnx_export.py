"""ONNX export of the tiny FVQ-Rater: the MobileNetV2 frame encoder and the rater (projectors + LLM + heads).

Two graphs, both with a dynamic batch axis:

- `encoder.onnx`: RGB uint8 images (B, H, W, 3) -> (B, 1584) float32, exactly what
  `engines.frame_encoders.MobileNetFrameEncoder.encode` computes (ImageNet normalisation inside the graph;
  H and W are dynamic too, so one file serves the spatial frames and the portrait crops).
- `rater.onnx`: the stacked `WindowFeatures` arrays (engines.rater.stack_features) -> raw `score` (B,),
  `level_logits` (B, 5) and `dimensions` (B, 6). The score calibration stays in the manifest.

YuNet and SFace are already ONNX files (engines/face_models.py); the bundle lists them by source and hash.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from engines.fvq_model import example_rater_inputs
from engines.rater import WindowFeatures

OPSET = 18
RATER_INPUTS = WindowFeatures.ARRAYS
RATER_OUTPUTS = ("score", "level_logits", "dimensions")
ENCODER_INPUT = "images"
ENCODER_OUTPUT = "features"
MAX_BATCH = 4096


class EncoderGraph(nn.Module):
    """MobileNetV2 blocks with the tiny rater's taps: uint8 NHWC in, the per-channel mean and std of each tap
    (and, when `pooled_head`, the last block's pooled features first) out."""

    def __init__(self, blocks: nn.Module, taps: tuple[int, ...], mean, std, pooled_head: bool = False) -> None:
        super().__init__()
        self.blocks = blocks
        self.taps = tuple(taps)
        self.pooled_head = pooled_head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().permute(0, 3, 1, 2) / 255.0  # cast first: TensorRT takes uint8 only into a Cast
        x = (x - self.mean) / self.std
        feats = []
        for i, layer in enumerate(self.blocks):
            x = layer(x)
            if i in self.taps:
                feats += [x.mean((2, 3)), x.std((2, 3))]
        return torch.cat([x.mean((2, 3)), *feats] if self.pooled_head else feats, 1)


class RaterGraph(nn.Module):
    """FVQRaterModel.forward with positional arrays in WindowFeatures.ARRAYS order and a tuple out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, spatial, portrait, face, face_mask, thumbs, intervals, signals):
        out = self.model({"spatial": spatial, "portrait": portrait, "face": face, "face_mask": face_mask,
                          "thumbs": thumbs, "intervals": intervals, "signals": signals})
        return out["score"], out["level_logits"], out["dimensions"]


def encoder_graph(rater) -> EncoderGraph:
    """The encoder graph of an FVQRater whose frame encoder is MobileNetV2 (the tiny size)."""
    from engines.frame_encoders import MOBILENET_TAPS, MobileNetFrameEncoder
    from engines.mobilenet import IMAGENET_MEAN, IMAGENET_STD

    if not isinstance(rater.encoder, MobileNetFrameEncoder):
        raise ValueError(
            f"only the tiny rater's MobileNetV2 encoder exports to ONNX; this rater uses {type(rater.encoder).__name__} "
            "(the full size encodes frames inside the model: use the torch CUDA path)"
        )
    enc = rater.encoder
    if hasattr(enc, "blocks"):  # blocks up to the last tap, tap statistics only
        blocks, pooled = enc.blocks, False
    else:  # the whole network: pooled 1280-d features first, then the tap statistics
        blocks, pooled = enc.net.features, True
    graph = EncoderGraph(blocks.cpu().float().eval(), MOBILENET_TAPS, IMAGENET_MEAN, IMAGENET_STD, pooled).eval()
    with torch.no_grad():
        dim = graph(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)).shape[1]
    if dim != enc.DIM:
        raise ValueError(f"the encoder graph gives {dim} features, {type(enc).__name__} {enc.DIM}: "
                         "export/onnx_export.py does not follow the encoder any more")
    return graph


@contextlib.contextmanager
def _quiet():
    """torch.onnx's dynamo exporter prints progress lines and warnings; keep them out of the CLI's output."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger("torch").level
        logging.getLogger("torch").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch").setLevel(level)


def export_encoder(rater, path: Path, example_size: tuple[int, int] = (128, 224)) -> Path:
    """Writes the frame encoder graph: images (B, H, W, 3) uint8 with B, H and W dynamic.

    A plain convolutional network: the TorchScript-based exporter handles it, in a tenth of the dynamo
    exporter's time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = encoder_graph(rater)
    x = torch.randint(0, 256, (2, *example_size, 3), dtype=torch.uint8)
    with _quiet(), torch.no_grad():
        torch.onnx.export(graph, (x,), str(path), input_names=[ENCODER_INPUT], output_names=[ENCODER_OUTPUT],
                          dynamic_axes={ENCODER_INPUT: {0: "batch", 1: "height", 2: "width"},
                                        ENCODER_OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(path))
    return path


def export_rater(model: nn.Module, path: Path, optimize: bool = True) -> Path:
    """Writes the rater graph (LoRA must be merged: engines/lora.py) with a dynamic batch axis.

    The transformers decoder needs the dynamo (torch.export) exporter, which needs `onnxscript`."""
    if getattr(model, "lora_injected", False):
        raise ValueError("merge the LoRA branches before export (engines.lora.merge_and_unload)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().float().eval()
    spec = model.config.feature_spec
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = {name: {0: batch} for name in RATER_INPUTS}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            RaterGraph(model).eval(), example_rater_inputs(spec), input_names=list(RATER_INPUTS),
            output_names=list(RATER_OUTPUTS), dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True,
            optimize=optimize, verbose=False,
        )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    return path


__all__ = ["ENCODER_INPUT", "ENCODER_OUTPUT", "RATER_INPUTS", "RATER_OUTPUTS", "EncoderGraph", "RaterGraph",
           "export_encoder", "export_rater"]
