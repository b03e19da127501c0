"""Training checkpoints for export: loaded with their LoRA merged (engines/lora.py), and the merge's parity.

A checkpoint is a folder as `python -m train.fit` writes it (rater_config.json, model.safetensors,
tokenizer.json, manifest.json). Bundles from train.fit are saved merged already; a checkpoint whose
rater_config.json says `lora_merged: false` still carries its adapters and is merged here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engines.bundle import has_manifest, read_manifest
from engines.lora import merge_and_unload


def load_checkpoint(checkpoint: Path, device: str = "cpu"):
    """An FVQRater from a train.fit folder, with its LoRA merged."""
    from safetensors.torch import load_model
    from tokenizers import Tokenizer

    from engines.forest import ScorePrior
    from engines.fvq_model import FVQRaterModel, hf_from_config
    from engines.fvq_rater import FVQRater
    from engines.rater_config import RaterConfig

    checkpoint = Path(checkpoint)
    config_path = checkpoint / "rater_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{checkpoint} is not a rater checkpoint: it has no rater_config.json "
            "(train one with `python -m train.fit --root CORPUS --out DIR`)"
        )
    config = RaterConfig.model_validate_json(config_path.read_text())
    manifest = checkpoint_manifest(checkpoint)
    if config.lora_merged:
        return FVQRater.load(checkpoint, manifest=manifest, device=device)
    hf = hf_from_config(config.family, config.lm_config)
    model = FVQRaterModel(config, hf, Tokenizer.from_file(str(checkpoint / "tokenizer.json")))  # injects LoRA
    load_model(model, str(checkpoint / "model.safetensors"), strict=True, device="cpu")
    merge_and_unload(model)
    rater = FVQRater(model, device=device)
    rater.prior = ScorePrior.from_manifest(checkpoint, manifest)
    return rater


def checkpoint_manifest(checkpoint: Path) -> dict:
    """The checkpoint's manifest, or {} when it has none (a folder of model files only)."""
    return read_manifest(checkpoint) if has_manifest(checkpoint) else {}


@torch.inference_mode()
def merge_parity(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Max |adapter - merged| of the model's outputs on `batch`; merges the model in place."""
    model.eval()
    before = {k: v.float().clone() for k, v in model(batch).items()}
    merge_and_unload(model)
    after = model(batch)
    return {k: float((before[k] - after[k].float()).abs().max()) for k in before}


__all__ = ["checkpoint_manifest", "load_checkpoint", "merge_parity"]
