"""FVQRater: the Rater over an FVQRaterModel in torch (tiny and full), and loading it from a bundle.

frame_features runs the frame encoder (engines/frame_encoders.py), the shared Rater.rate runs one forward pass
of the model (engines/fvq_model.py); the config, prompt and LoRA helpers live beside it in engines/, the training
losses, builders and saving in train/model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from engines.bundle import MANIFEST, default_rater, learned_heads, model_family, precision_entry
from engines.features import FrameRecord
from engines.forest import ScorePrior
from engines.frame_encoders import MobileNetFrameEncoder, PixelFrameEncoder
from engines.fvq_model import FVQRaterModel, hf_from_config
from engines.rater import Rater, portrait_crop
from engines.rater_config import RaterConfig


class FVQRater(Rater):
    """The Rater over an FVQRaterModel: frame_features runs the frame encoder, rate runs one forward pass."""

    def __init__(self, model: FVQRaterModel, device: str = "cpu", encoder=None) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.config = model.config
        self.spec = model.config.feature_spec
        if encoder is None:
            cfg = model.config
            encoder = (PixelFrameEncoder(cfg.spatial_size, cfg.portrait_size) if model.pixels
                       else MobileNetFrameEncoder(cfg.spatial_size, cfg.portrait_size, device))
        self.encoder = encoder
        self.dimension_heads: tuple[str, ...] = ()  # set from the manifest by load
        self.precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[model.config.dtype]

    @property
    def rates_dimensions(self) -> bool:  # type: ignore[override]
        return self.config.rates_dimensions  # training sets it once the dimension labels are known

    @property
    def extractor_version(self) -> str:
        c = self.config
        return f"{self.encoder.VERSION}/s{c.spatial_size}/p{c.portrait_size}/{json.dumps(c.spec, sort_keys=True)}"

    def frame_features(self, records: list[FrameRecord]) -> None:
        todo = [r for r in records if r.image is not None and "spatial" not in r.extra]
        if not todo:
            return
        spatial, portrait = self.encoder([r.image for r in todo], [portrait_crop(r) for r in todo])
        for r, s, p in zip(todo, spatial, portrait, strict=True):
            r.extra["spatial"] = s
            r.extra["portrait"] = p

    def tensors(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in arrays.items()}

    def predict(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw model outputs for stacked feature arrays (see engines.rater.stack_features)."""
        with torch.inference_mode():
            out = self.model(self.tensors(arrays))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        c = self.config.calibration
        return np.clip(c["a"] * raw + c["b"], 0.0, 100.0)

    @classmethod
    def load(cls, bundle_dir: Path, manifest: dict | None = None, device: str = "cpu") -> FVQRater:
        from safetensors.torch import load_model
        from tokenizers import Tokenizer

        bundle_dir = Path(bundle_dir)
        config = RaterConfig.model_validate_json((bundle_dir / "rater_config.json").read_text())
        config.lora_merged = True
        check_bundle_family(bundle_dir, config, manifest)
        if config.size == "full":
            check_bundle_memory(bundle_dir, device)
        hf = hf_from_config(config.family, config.lm_config)
        model = FVQRaterModel(config, hf, Tokenizer.from_file(str(bundle_dir / "tokenizer.json")))  # in config.dtype
        load_model(model, str(bundle_dir / "model.safetensors"), strict=True, device="cpu")
        rater = cls(model, device=device)
        if config.rates_dimensions and manifest:
            rater.dimension_heads = learned_heads(manifest)
        rater.prior = ScorePrior.from_manifest(bundle_dir, manifest)
        return rater


def check_bundle_memory(bundle_dir: Path, device: str = "cpu", available: int | None = None) -> int:
    """Refuses, before loading, a bundle whose weights (read from the safetensors header) need more memory to serve
    than `device` has free; returns the estimate in bytes."""
    from safetensors import safe_open

    from engines.base_model import check_memory

    n, dtypes = 0, set()
    with safe_open(str(Path(bundle_dir) / "model.safetensors"), "pt") as f:
        for k in f.keys():
            sl = f.get_slice(k)
            n += int(np.prod(sl.get_shape()))
            dtypes.add(sl.get_dtype())
    dtype = torch.float32 if "F32" in dtypes else torch.bfloat16
    return check_memory(n, dtype, training=False, device=device, available=available, where=f"bundle {bundle_dir}: ")


def check_bundle_family(bundle_dir: Path, config: RaterConfig, manifest: dict | None) -> None:
    """Refuses a bundle whose files disagree on the model family (weights of one training, config or manifest of
    another), naming both; the transformers class of the family must exist in the installed transformers."""
    from safetensors import safe_open

    from engines.base_model import BaseModelError, model_class, weights_family

    with safe_open(str(Path(bundle_dir) / "model.safetensors"), "pt") as f:
        stored = weights_family(f.keys())
    said = {"rater_config.json": config.family, "lm_config.model_type": config.lm_config.get("model_type")}
    if model_family(manifest):
        said[MANIFEST] = model_family(manifest)
    wrong = {k: v for k, v in said.items() if v != stored}
    if wrong:
        raise BaseModelError(f"bundle {bundle_dir}: model.safetensors holds the weights of a rater on {stored}, but "
                             + ", ".join(f"{k} says {v}" for k, v in wrong.items())
                             + ": the bundle mixes files trained for different base model families; export or "
                               "copy the whole bundle again")
    try:
        model_class(config.family)
    except AttributeError as exc:
        raise BaseModelError(f"bundle {bundle_dir} was trained on a {config.family} base model, which this "
                             f"transformers does not have ({exc}): upgrade transformers") from exc


def load_torch_bundle(bundle_dir: Path, manifest: dict, device: str = "cpu", precision: str | None = None) -> FVQRater:
    """An exported `full` bundle (fvq export): the merged weights at the precision its manifest chose (or
    `precision`), engines.quantized applying int8 / int4 / bf16 at load time."""
    from engines.quantized import apply_precision

    chosen = precision or default_rater(manifest)["precision"]
    precision_entry(bundle_dir, manifest, chosen)
    rater = FVQRater.load(bundle_dir, manifest=manifest, device="cpu")
    notes = (manifest.get("precision_notes") or {}).get(chosen) or {}
    apply_precision(rater.model, chosen, group_size=int(notes.get("group_size", 128)), device=device)
    rater.model.to(device)
    rater.device = device
    rater.precision = chosen
    return rater


__all__ = ["FVQRater", "check_bundle_family", "check_bundle_memory", "load_torch_bundle"]
