"""Building, training losses and saving of FVQ-Rater models: what only training (and export) needs.

Serving loads a saved rater through engines.fvq_rater.FVQRater.load; this module builds untrained ones (tiny from
a config in code, full around a local vision-language model), scores the two training stages, and writes the
model files of a bundle (train.fit writes the manifest beside them through engines/bundle.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines.features import LEVELS
from engines.forest import FOREST_FILE
from engines.frame_encoders import MobileNetFrameEncoder
from engines.fvq_model import FVQRaterModel, family_of, hf_from_config
from engines.prompt import ANSWER_PREFIX, PROMPT, SPECIAL_TOKENS, build_tokenizer
from engines.rater import FeatureSpec
from engines.rater_config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, RaterConfig


def tiny_lm_config(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 4) -> dict[str, Any]:
    from transformers import Qwen2Config

    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=SPECIAL_TOKENS.index("<s>"),
        eos_token_id=SPECIAL_TOKENS.index("</s>"),
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
    )
    return cfg.to_dict()


def stage1_loss(out: dict[str, torch.Tensor], levels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer position's level-word logits against the MOS's level band."""
    return nn.functional.cross_entropy(out["level_logits"], levels)


def stage2_loss(out: dict[str, torch.Tensor], mos: torch.Tensor, dims: torch.Tensor | None = None,
                dims_mask: torch.Tensor | None = None, dims_weight: float = 1.0) -> torch.Tensor:
    """L1 between the regression head and the MOS (0..100), plus L1 on the dimensions where labelled."""
    loss = (out["score"] - mos.float()).abs().mean()
    if dims is not None and dims_mask is not None and dims_mask.any():
        err = (out["dimensions"] - dims.float()).abs() * dims_mask.float()
        loss = loss + dims_weight * err.sum() / dims_mask.float().sum().clamp(min=1)
    return loss


def save_rater(rater, out_dir: Path) -> list[Path]:
    """Writes rater_config.json, model.safetensors (LoRA merged) and tokenizer.json; returns the paths."""
    from safetensors.torch import save_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rater.model.merge_lora()
    rater.config.lm_config = rater.model.hf.config.to_dict()
    paths = [out_dir / "rater_config.json", out_dir / "model.safetensors", out_dir / "tokenizer.json"]
    paths[0].write_text(rater.config.model_dump_json(indent=2))
    save_model(rater.model, str(paths[1]))
    rater.model.tokenizer.save(str(paths[2]))
    if rater.prior is not None:
        paths.append(rater.prior.forest.save(out_dir / FOREST_FILE))
    return paths


# ---------------------------------------------------------------------------------------------
# Building untrained raters
# ---------------------------------------------------------------------------------------------


TINY_FRAMES = 4  # model frames per window: a 4 s window at analysis.model_fps = 1


def build_tiny(signal_keys: Sequence[str] = (), seed: int = 0, hidden: int = 128, layers: int = 2,
               heads: int = 4, spec: FeatureSpec | None = None, **overrides: Any) -> FVQRaterModel:
    """The default CPU model: a small Qwen2 decoder, its tokenizer built here, over MobileNetV2 features."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    base = spec or FeatureSpec(frames=TINY_FRAMES)
    spec = FeatureSpec(frames=base.frames, temporal_len=base.temporal_len, thumb_size=base.thumb_size,
                       interval_len=base.interval_len, signal_keys=tuple(signal_keys),
                       spatial_shape=(MobileNetFrameEncoder.DIM,), portrait_shape=(MobileNetFrameEncoder.DIM,))
    lm_config = tiny_lm_config(tokenizer.get_vocab_size(), hidden, layers, heads)
    config = RaterConfig(size="tiny", family="qwen2", lm_config=lm_config, spec=spec.to_dict(), **overrides)
    return FVQRaterModel(config, hf_from_config("qwen2", lm_config), tokenizer)


def build_full(hf: nn.Module, tokenizer, signal_keys: Sequence[str] = (), seed: int = 0,
               image_size: tuple[int, int] | None = None, spec: FeatureSpec | None = None,
               image_mean=None, image_std=None, spatial_size: tuple[int, int] | None = None,
               portrait_size: tuple[int, int] | None = None, **overrides: Any) -> FVQRaterModel:
    """A rater around a loaded vision-language model (its vision tower encodes frames and crops). Frames are
    fed at `spatial_size` (default `image_size`), crops at `portrait_size` (default square of its height)."""
    torch.manual_seed(seed)
    family = family_of(hf)
    if family == "qwen2":
        raise ValueError("the full rater needs a vision-language model (Qwen2-VL, Qwen2.5-VL or InternVL)")
    if image_size is None:
        if family == "internvl":
            s = hf.config.vision_config.image_size
            image_size = (s[0], s[1]) if isinstance(s, (list, tuple)) else (s, s)
        else:
            image_size = (224, 392)
    spatial_size = tuple(spatial_size or image_size)  # type: ignore[assignment]
    portrait_size = tuple(portrait_size or (spatial_size[0], spatial_size[0]))  # type: ignore[assignment,index]
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if family == "internvl" else (CLIP_MEAN, CLIP_STD)
    base = spec or FeatureSpec()
    spec = FeatureSpec(frames=base.frames, temporal_len=base.temporal_len, thumb_size=base.thumb_size,
                       interval_len=base.interval_len, signal_keys=tuple(signal_keys),
                       spatial_shape=(*spatial_size, 3), portrait_shape=(*portrait_size, 3))
    overrides.setdefault("dtype", str(next(hf.parameters()).dtype).removeprefix("torch."))
    config = RaterConfig(
        size="full", family=family, lm_config=hf.config.to_dict(), spec=spec.to_dict(),
        spatial_size=spatial_size, portrait_size=portrait_size,
        image_mean=tuple(image_mean or default_mean), image_std=tuple(image_std or default_std),
        train_lm_stage1=False, **overrides,
    )
    return FVQRaterModel(config, hf, tokenizer)


def build_from_base(base, signal_keys: Sequence[str] = (), seed: int = 0, spec: FeatureSpec | None = None,
                    **overrides: Any) -> FVQRaterModel:
    """A rater around an engines.base_model.BaseModel: its vision tower at its processor's sizes, its tokenizer's
    chat template and level-word tokens, its dtype for every part."""
    from engines.base_model import level_tokens, prompt_segments, render_prompt

    text = render_prompt(base.chat_template, PROMPT, ANSWER_PREFIX, base.bos_token, base.specials)
    segments = prompt_segments(base.tokenizer, text)
    level_ids, splits = level_tokens(base.tokenizer, tuple(LEVELS))
    sizes = base.sizes
    info = {**base.info, "level_words": {w: splits[w]["tokens"] for w in LEVELS},
            "prompt_text": text.replace("\x00", "|"), "vision_rule": sizes.rule}
    return build_full(base.hf, base.tokenizer, signal_keys, seed=seed, spec=spec, spatial_size=sizes.spatial,
                      portrait_size=sizes.portrait, image_mean=sizes.mean, image_std=sizes.std,
                      prompt_ids=segments, level_token_ids=level_ids,
                      dtype=str(base.dtype).removeprefix("torch."), base=info, **overrides)


def load_base_model(model_dir: Path, dtype: str = "auto", **kwargs: Any):
    """A checked base model from a LOCAL folder (engines.base_model.load_base_model)."""
    from engines.base_model import load_base_model as load

    return load(model_dir, dtype=dtype, **kwargs)


__all__ = ["TINY_FRAMES", "build_from_base", "build_full", "build_tiny", "load_base_model", "save_rater", "stage1_loss", "stage2_loss", "tiny_lm_config"]
