"""The frame encoders FVQRater.frame_features runs: frozen MobileNetV2 tap statistics (tiny), or resized pixels for a
model whose vision tower runs inside the rater (full)."""

from __future__ import annotations

import numpy as np
import torch

from engines.rater import resize_frame

# Frozen encoder of the tiny size: blocks whose activations are pooled (mean and std per channel). The network
# stops after the last tap (block 13, stride 16): the low-level statistics are what tell distortions apart, and
# blocks 14-18 (the 1280-d semantic head) would cost as much again. The extractor version keys feature caches.
MOBILENET_TAPS = (3, 6, 10, 13)
MOBILENET_TAP_CHANNELS = (24, 32, 64, 96)


class MobileNetFrameEncoder:
    """Frozen ImageNet MobileNetV2 up to block 13: per-channel mean and std of blocks 3, 6, 10 and 13 (432-d).

    One thread, inference mode: at 224x128 plus a 128x128 crop this is ~9 ms a frame on one core (the full
    network with its 1280-d head was ~17 ms), and the live path runs it on a sparse grid (analysis.model_fps).
    """

    VERSION = "mobilenet_v2-b0353104/taps3,6,10,13-meanstd/v2"
    DIM = 2 * sum(MOBILENET_TAP_CHANNELS)

    def __init__(self, spatial_size: tuple[int, int], portrait_size: tuple[int, int], device: str = "cpu") -> None:
        from engines.mobilenet import load_mobilenet_v2, weights_path

        net = load_mobilenet_v2()
        self.blocks = net.features[: max(MOBILENET_TAPS) + 1].to(device)
        self.weights = weights_path()
        self.device = device
        self.spatial_size, self.portrait_size = spatial_size, portrait_size

    @torch.inference_mode()
    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        from engines.mobilenet import to_input

        x = to_input(np.stack(images)).to(self.device)
        feats = []
        for i, layer in enumerate(self.blocks):
            x = layer(x)
            if i in MOBILENET_TAPS:
                feats += [x.mean((2, 3)), x.std((2, 3))]
        return torch.cat(feats, 1).float().cpu().numpy()

    def __call__(self, frames: list[np.ndarray], crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        spatial = self.encode([resize_frame(f, self.spatial_size) for f in frames])
        portrait = self.encode([resize_frame(c, self.portrait_size) for c in crops])
        return spatial, portrait


class PixelFrameEncoder:
    """For models whose vision tower runs inside the rater: resized uint8 frames and crops."""

    VERSION = "pixels/v1"

    def __init__(self, spatial_size: tuple[int, int], portrait_size: tuple[int, int]) -> None:
        self.spatial_size, self.portrait_size = spatial_size, portrait_size

    def __call__(self, frames: list[np.ndarray], crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([resize_frame(f, self.spatial_size) for f in frames]),
                np.stack([resize_frame(c, self.portrait_size) for c in crops]))


__all__ = ["MOBILENET_TAPS", "MOBILENET_TAP_CHANNELS", "MobileNetFrameEncoder", "PixelFrameEncoder"]
