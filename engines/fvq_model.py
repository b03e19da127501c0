"""FVQRaterModel: four projected feature streams fused by a language model, with Stage I (level) and Stage II (MOS)
heads, and the transformers model behind the fusion (one adapter per family).

One code path, two sizes. `tiny` fuses with a small Qwen2 decoder built from a config in code over frozen
ImageNet MobileNetV2 features; `full` loads a Qwen2-VL / Qwen2.5-VL or InternVL model from a local directory
and encodes frames with its own vision tower (with a LoRA branch). The prompt (engines/prompt.py) is a fixed
list of text segments and token groups, so every window's sequence has the same length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from engines.features import DIMENSIONS, LEVELS
from engines.lora import lora_targets, merge_lora
from engines.prompt import GROUPS, TEMPLATE
from engines.rater import INTERVAL_FEATURES, FeatureSpec
from engines.rater_config import FAMILIES, RaterConfig


def _model_class(family: str):
    from engines.base_model import model_class

    return model_class(family)


def hf_from_config(family: str, lm_config: dict[str, Any]) -> nn.Module:
    """A randomly initialised transformers model of `family` from its config dict (weights come later)."""
    from transformers import AutoConfig

    d = dict(lm_config)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    config._attn_implementation = "sdpa"
    return _model_class(family)(config)


def family_of(model: nn.Module) -> str:
    model_type = model.config.model_type  # type: ignore[union-attr]
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported base model type {model_type!r}; supported: {', '.join(FAMILIES)}")
    return model_type


def _decoder(hf: nn.Module, family: str) -> nn.Module:
    return hf.model if family == "qwen2" else hf.model.language_model  # type: ignore[return-value]


class VisionPool(nn.Module):
    """The base model's own vision tower (with its merger/projector), mean-pooled to one vector per image."""

    def __init__(self, hf: nn.Module, family: str, mean, std) -> None:
        super().__init__()
        self.family = family
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._hf = [hf]  # not a submodule: the weights belong to FVQRaterModel.hf

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, D) with D the LLM hidden size."""
        hf = self._hf[0]
        x = pixels.permute(0, 3, 1, 2).float().div(255.0)
        x = ((x - self.mean) / self.std).to(next(hf.parameters()).dtype)
        if self.family == "internvl":
            cfg = hf.config
            out = hf.model.get_image_features(
                x, vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            ).pooler_output
            return out.mean(1)
        vcfg = hf.config.vision_config
        ps, ms, tps = vcfg.patch_size, vcfg.spatial_merge_size, vcfg.temporal_patch_size
        n, c, h, w = x.shape
        gh, gw = h // ps, w // ps
        # the processor's layout: (grid rows/merge, grid cols/merge, merge, merge, C, temporal, ps, ps)
        p = x.reshape(n, c, gh // ms, ms, ps, gw // ms, ms, ps).permute(0, 2, 5, 3, 6, 1, 4, 7)
        p = p.unsqueeze(6).expand(*p.shape[:6], tps, ps, ps).reshape(n * gh * gw, c * tps * ps * ps)
        grid = torch.tensor([[1, gh, gw]] * n, device=x.device)
        pooled = hf.model.get_image_features(p, grid).pooler_output
        return torch.stack([t.mean(0) for t in pooled])


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class Projector(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear: one stream's features into the LLM's token space."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TemporalEncoder(nn.Module):
    """Conv over thumb frame differences and over frame-interval features -> `tokens` tokens, plus a signals token."""

    def __init__(self, d_model: int, signals_dim: int, tokens: int, width: int, hidden: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.frame_net = nn.Sequential(  # per step on [frame, |diff|, diff]
            nn.Conv2d(3, 16, 3, 2, 1), nn.GELU(), nn.Conv2d(16, width, 3, 2, 1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.time_net = nn.Sequential(nn.Conv1d(width, width, 3, 1, 1), nn.GELU())
        self.interval_net = nn.Sequential(nn.Conv1d(len(INTERVAL_FEATURES), width, 3, 1, 1), nn.GELU(),
                                          nn.Conv1d(width, width, 3, 1, 1), nn.GELU())
        self.out = nn.Linear(2 * width, d_model)
        self.signals = Projector(max(signals_dim, 1), hidden, d_model)
        self.register_buffer("signal_mean", torch.zeros(max(signals_dim, 1)))
        self.register_buffer("signal_std", torch.ones(max(signals_dim, 1)))

    def forward(self, thumbs: torch.Tensor, intervals: torch.Tensor, signals: torch.Tensor) -> torch.Tensor:
        b, t, h, w = thumbs.shape
        dtype = self.out.weight.dtype  # the rater's one dtype (float32 for tiny)
        x = (thumbs.float() / 255.0).to(dtype)
        diff = x[:, 1:] - x[:, :-1]
        steps = torch.stack([x[:, 1:], diff.abs(), diff], dim=2).reshape(b * (t - 1), 3, h, w)
        f = self.frame_net(steps).view(b, t - 1, -1).transpose(1, 2)  # (b, width, t-1)
        f = nn.functional.adaptive_avg_pool1d(self.time_net(f), self.tokens)
        g = nn.functional.adaptive_avg_pool1d(self.interval_net(intervals.to(dtype).transpose(1, 2)), self.tokens)
        tokens = self.out(torch.cat([f, g], 1).transpose(1, 2))  # (b, tokens, d)
        if signals.shape[1] == 0:
            signals = torch.zeros(b, 1, device=signals.device)
        s = signals.float()  # normalised in fp32, then the rater's dtype
        s = (torch.sign(s) * torch.log1p(s.abs()) - self.signal_mean.float()) / self.signal_std.float()
        return torch.cat([tokens, self.signals(s.clamp(-8, 8).to(dtype)).unsqueeze(1)], 1)


class FVQRaterModel(nn.Module):
    """Projectors + fusion LM + heads. forward(batch of tensors) -> level logits, score, dimensions."""

    def __init__(self, config: RaterConfig, hf: nn.Module, tokenizer) -> None:
        super().__init__()
        self.config = config
        self.family = config.family
        self.hf = hf
        self.tokenizer = tokenizer
        spec = config.feature_spec
        d = _decoder(hf, self.family).config.hidden_size
        self.d_model = d
        self.pixels = len(spec.spatial_shape) == 3
        self.vision = VisionPool(hf, self.family, config.image_mean, config.image_std) if self.pixels else None
        d_spatial = d if self.pixels else spec.spatial_shape[0]
        d_portrait = d if self.pixels else spec.portrait_shape[0]
        hid = config.projector_hidden
        self.spatial_proj = Projector(d_spatial, hid, d)
        self.portrait_proj = Projector(d_portrait, hid, d)
        self.face_proj = Projector(128, hid, d)
        self.no_face = nn.Parameter(torch.zeros(d))
        self.temporal = TemporalEncoder(d, spec.signals_dim, config.temporal_tokens, config.temporal_width, hid)
        self.frame_pos = nn.Parameter(torch.zeros(spec.frames, d))
        nn.init.normal_(self.frame_pos, std=0.02)
        self.score_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hid), nn.GELU(), nn.Linear(hid, 1))
        self.dims_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hid), nn.GELU(), nn.Linear(hid, len(DIMENSIONS)))

        # The fixed prompt, tokenised once: the base tokenizer's chat template (full, config.prompt_ids), or the
        # built-in template with the code-built tokenizer (tiny).
        segments: list[list[int] | str] = []
        if config.prompt_ids is not None:
            segments = [s if isinstance(s, str) else list(s) for s in config.prompt_ids]
        else:
            bos = [tokenizer.token_to_id("<s>")] if tokenizer.token_to_id("<s>") is not None else []
            for i, seg in enumerate(TEMPLATE):
                if seg.startswith("<") and seg.endswith(">") and seg[1:-1] in GROUPS:
                    segments.append(seg[1:-1])
                else:
                    ids = tokenizer.encode(seg, add_special_tokens=False).ids
                    segments.append((bos if i == 0 else []) + ids)
        self.segments = segments
        for i, seg in enumerate(segments):
            if not isinstance(seg, str):
                self.register_buffer(f"text_{i}", torch.tensor(seg, dtype=torch.long), persistent=False)
        level_ids = config.level_token_ids or [tokenizer.encode(" " + w, add_special_tokens=False).ids[0] for w in LEVELS]
        if len(set(level_ids)) != len(LEVELS):
            raise ValueError(f"the tokenizer does not tell the level words apart: {dict(zip(LEVELS, level_ids, strict=True))}")
        self.register_buffer("level_ids", torch.tensor(level_ids, dtype=torch.long), persistent=False)
        self.lora_injected = False
        if not config.lora_merged:
            self.inject_lora()
        self.to(self.dtype)  # adapters, projectors and heads in the base's dtype (a no-op for fp32)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.config.dtype)

    # -- LoRA and stages ------------------------------------------------------------------------

    def inject_lora(self) -> None:
        """LoRA on the LLM's q/k/v/o (and the vision tower for full). B starts at zero: no effect until trained."""
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.config
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=lora_targets(self.family, cfg.vision_lora and self.pixels))
        inject_adapter_in_model(lora, self.hf)
        self.lora_injected = True
        self.to(self.dtype)

    def merge_lora(self) -> None:
        if self.lora_injected:
            merge_lora(self.hf)
            self.lora_injected = False
        self.config.lora_merged = True

    def set_stage(self, stage: int) -> None:
        """Which weights train. Stage I: projectors, temporal encoder, vision LoRA (+ the whole LM when
        train_lm_stage1). Stage II: projectors, temporal encoder, heads, vision LoRA and LLM LoRA."""
        if stage not in (1, 2):
            raise ValueError("stage is 1 or 2")
        for name, p in self.named_parameters():
            if not name.startswith("hf."):
                p.requires_grad_(stage == 2 or not name.startswith(("score_head.", "dims_head.")))
                continue
            is_lora = "lora_" in name
            is_vision = any(v in name for v in (".visual.", ".vision_tower.", ".multi_modal_projector."))
            if is_lora:
                p.requires_grad_(is_vision or stage == 2)
            else:
                p.requires_grad_(stage == 1 and self.config.train_lm_stage1 and not is_vision)

    def set_signal_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.temporal.signal_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.temporal.signal_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    # -- forward --------------------------------------------------------------------------------

    def _encode(self, x: torch.Tensor, proj: Projector) -> torch.Tensor:
        if self.pixels:
            b, k = x.shape[:2]
            x = self.vision(x.reshape(b * k, *x.shape[2:])).view(b, k, -1)  # type: ignore[misc]
        return proj(x.to(self.dtype)) + self.frame_pos

    def groups(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fd = self.config.feature_dropout if self.training else 0.0
        if fd > 0:
            batch = dict(batch)
            for name in ("face",) + (() if self.vision is not None else ("spatial", "portrait")):
                batch[name] = nn.functional.dropout(batch[name].to(self.dtype), fd, training=True)
        face = self.face_proj(batch["face"].to(self.dtype))
        m = batch["face_mask"].to(self.dtype).unsqueeze(-1)
        return {
            "spatial": self._encode(batch["spatial"], self.spatial_proj),
            "portrait": self._encode(batch["portrait"], self.portrait_proj),
            "face": m * face + (1 - m) * self.no_face + self.frame_pos,
            "temporal": self.temporal(batch["thumbs"], batch["intervals"], batch["signals"]),
        }

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        groups = self.groups(batch)
        b = batch["face"].shape[0]
        p = self.config.stream_dropout if self.training else 0.0
        if p > 0:  # a window sometimes rated without one of its content streams (never the temporal/signals one)
            for name in ("spatial", "portrait", "face"):
                keep = (torch.rand(b, 1, 1, device=groups[name].device) >= p).to(groups[name].dtype)
                groups[name] = groups[name] * keep
        embed = self.hf.get_input_embeddings()
        dtype = embed.weight.dtype
        parts = []
        for i, seg in enumerate(self.segments):
            if isinstance(seg, str):
                parts.append(groups[seg].to(dtype))
            else:
                parts.append(embed(getattr(self, f"text_{i}")).unsqueeze(0).expand(b, -1, -1))
        inputs = torch.cat(parts, 1)
        hidden = _decoder(self.hf, self.family)(inputs_embeds=inputs, use_cache=False).last_hidden_state[:, -1]
        logits = self.hf.get_output_embeddings()(hidden)[:, self.level_ids].float()
        h = hidden.to(self.dtype)
        score = 50.0 + 25.0 * self.score_head(h).squeeze(-1).float()  # outputs (and losses) in fp32
        dims = 50.0 + 25.0 * self.dims_head(h).float()
        return {"level_logits": logits, "score": score, "dimensions": dims}

    @property
    def sequence_length(self) -> int:
        spec = self.config.feature_spec
        sizes = {"spatial": spec.frames, "portrait": spec.frames, "face": spec.frames,
                 "temporal": self.config.temporal_tokens + 1}
        return sum(sizes[s] if isinstance(s, str) else len(s) for s in self.segments)


def example_rater_inputs(spec: FeatureSpec, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Random inputs of the rater's forward in WindowFeatures.ARRAYS order (graph tracing, warm-up, parity)."""
    g = torch.Generator().manual_seed(0)
    k = spec.frames
    return (
        torch.randn(batch, k, *spec.spatial_shape, generator=g),
        torch.randn(batch, k, *spec.portrait_shape, generator=g),
        torch.randn(batch, k, 128, generator=g),
        torch.ones(batch, k),
        torch.randint(0, 256, (batch, spec.temporal_len, *spec.thumb_size), generator=g).to(torch.uint8),
        torch.rand(batch, spec.interval_len, 4, generator=g),
        torch.randn(batch, spec.signals_dim, generator=g),
    )


__all__ = ["FVQRaterModel", "Projector", "TemporalEncoder", "VisionPool", "example_rater_inputs", "family_of", "hf_from_config"]
