"""A tiny untrained FVQ-Rater (real ImageNet MobileNetV2, small Qwen2) with trained-looking LoRA, exported once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.fvq_model import FVQRaterModel
from engines.rater import FeatureSpec
from train.model import build_tiny

SPEC = FeatureSpec(frames=4, temporal_len=6, thumb_size=(36, 64), interval_len=8)
SIGNAL_KEYS = ("frame.noise_sigma", "face.edge_blur_px")


def tiny_model(seed: int = 0) -> FVQRaterModel:
    """Untrained tiny rater whose LoRA B matrices are non-zero, so merging changes weights."""
    model = build_tiny(SIGNAL_KEYS, seed=seed, hidden=32, layers=1, heads=2, spec=SPEC, projector_hidden=32,
                       calibration={"a": 1.5, "b": 10.0})
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A train.fit-style folder with its LoRA still unmerged (rater_config says lora_merged: false)."""
    from safetensors.torch import save_model

    out = tmp_path_factory.mktemp("checkpoint")
    model = tiny_model()
    (out / "rater_config.json").write_text(model.config.model_dump_json(indent=2))
    save_model(model, str(out / "model.safetensors"))
    model.tokenizer.save(str(out / "tokenizer.json"))
    return out


@pytest.fixture(scope="session")
def exported(checkpoint, tmp_path_factory) -> Path:
    from export.cli import run_export

    out = tmp_path_factory.mktemp("exported") / "bundle"
    run_export(checkpoint, out, log=lambda s: None)
    return out
