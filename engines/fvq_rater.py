"""FVQ-Rater: four projected feature streams fused by a language model, with Stage I (level) and Stage II (MOS) heads.

One code path, two sizes. `tiny` fuses with a small Qwen2 decoder built from a config in code (its
tokenizer built in code too) over frozen ImageNet MobileNetV2 features; `full` loads a Qwen2-VL /
Qwen2.5-VL or InternVL model from a local directory and encodes frames with its own vision tower
(with a LoRA branch). The prompt is a fixed list of text segments and token groups, so every window's
sequence has the same length: no padding, no placeholder-token bookkeeping, one forward pass, no generation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from engines.features import DIMENSIONS, LEVELS, FrameRecord
from engines.forest import FOREST_FILE, ScorePrior
from engines.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from engines.rater import (
    INTERVAL_FEATURES,
    FeatureSpec,
    Rater,
    Rating,
    WindowFeatures,
    portrait_crop,
    ratings_from_outputs,
    resize_frame,
    stack_features,
)

PROMPT = "Please evaluate the quality of this video."
ANSWER_PREFIX = "The video quality is"
# Text segments and token groups, in order. The answer position is the last token ("is"): its LM-head
# logits over the five level words are the Stage I output, its hidden state feeds the Stage II head.
TEMPLATE: tuple[str, ...] = (
    "USER: " + PROMPT + " Frames:", "<spatial>",
    " Portrait:", "<portrait>",
    " Face:", "<face>",
    " Motion:", "<temporal>",
    " ASSISTANT: " + ANSWER_PREFIX,
)
GROUPS = ("spatial", "portrait", "face", "temporal")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<spatial>", "<portrait>", "<face>", "<temporal>")
FAMILIES = ("qwen2", "qwen2_vl", "qwen2_5_vl", "internvl")
# Frozen encoder of the tiny size: blocks whose activations are pooled (mean and std per channel). The network
# stops after the last tap (block 13, stride 16): the low-level statistics are what tell distortions apart, and
# blocks 14-18 (the 1280-d semantic head) would cost as much again. The extractor version keys feature caches.
MOBILENET_TAPS = (3, 6, 10, 13)
MOBILENET_TAP_CHANNELS = (24, 32, 64, 96)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class RaterConfig(BaseModel):
    """Everything needed to rebuild the model from a bundle (saved as rater_config.json)."""

    model_config = ConfigDict(extra="forbid")

    size: Literal["tiny", "full"] = Field("tiny", description="tiny: CPU real time; full: a local VLM on a GPU.")
    family: Literal["qwen2", "qwen2_vl", "qwen2_5_vl", "internvl"] = Field(
        "qwen2", description="transformers architecture of the fusion model (qwen2: text-only, tiny)."
    )
    lm_config: dict[str, Any] = Field(default_factory=dict, description="The transformers config (to_dict()).")
    spec: dict[str, Any] = Field(default_factory=lambda: FeatureSpec().to_dict(), description="FeatureSpec.")
    spatial_size: tuple[int, int] = Field((128, 224), description="(h, w) whole frames are resized to.")
    portrait_size: tuple[int, int] = Field((128, 128), description="(h, w) head-and-shoulders crops are resized to.")
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    projector_hidden: int = Field(256, description="Hidden width of each stream's projector MLP.")
    temporal_tokens: int = Field(4, description="Tokens of the temporal encoder (plus one for the signals).")
    temporal_width: int = Field(32, description="Channels of the temporal encoder.")
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    vision_lora: bool = Field(True, description="A LoRA branch on the vision tower (full).")
    lora_merged: bool = Field(False, description="True in shipped bundles: LoRA is folded into the weights.")
    train_lm_stage1: bool = Field(True, description="Train the whole LM in Stage I (tiny: it starts random).")
    rates_dimensions: bool = Field(False, description="The dimension head was trained (labels existed).")
    stream_dropout: float = Field(0.0, description="Training only: chance that a window's spatial, portrait "
                                  "or face tokens are zeroed, so the score cannot lean on recognising content.")
    feature_dropout: float = Field(0.0, description="Training only: dropout on the frame and face features.")
    calibration: dict[str, float] = Field(default_factory=lambda: {"a": 1.0, "b": 0.0},
                                          description="score = clip(a * raw + b, 0, 100).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="One dtype for the whole rater (full: the base checkpoint's); losses stay fp32.")
    prompt_ids: list[list[int] | str] | None = Field(
        None, description="full: the prompt as token id lists and group names, from the base tokenizer's chat "
                          "template (engines.base_model); None: the built-in TEMPLATE.")
    level_token_ids: list[int] | None = Field(
        None, description="full: the id each level word scores by (first token of ' word' in the base tokenizer).")
    base: dict[str, Any] = Field(default_factory=dict, description="full: the base model folder's facts (family, "
                                 "dtype, parameters, tokenizer splits, vision sizes and the rule behind them).")

    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec.from_dict(self.spec)


# ---------------------------------------------------------------------------------------------
# Tokenizer (tiny): built in code
# ---------------------------------------------------------------------------------------------


def build_tokenizer():
    """A word-level tokenizer over the prompt and answer texts, the level words and single digits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    texts = [*TEMPLATE, "The video quality is", "The score is", *LEVELS, "bad poor fair good excellent"]
    words: list[str] = []
    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            if piece not in words and piece not in SPECIAL_TOKENS:
                words.append(piece)
    for d in "0123456789.":
        if d not in words:
            words.append(d)
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()  # joins with spaces
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


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


# ---------------------------------------------------------------------------------------------
# The transformers model behind the fusion: one adapter per family
# ---------------------------------------------------------------------------------------------


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


def lora_targets(family: str, vision: bool) -> str:
    """Regex over module names: the LLM's q/k/v/o projections, plus the vision tower's attention."""
    llm = r".*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    if not vision or family == "qwen2":
        return llm + "$"
    if family in ("qwen2_vl", "qwen2_5_vl"):
        vis = r".*visual\.blocks\.\d+\.attn\.(qkv|proj)"
    else:
        vis = r".*vision_tower\.encoder\.layer\.\d+\.attention\.(q_proj|k_proj|v_proj|projection_layer)"
    return f"({llm}|{vis})$"


def merge_lora(module: nn.Module) -> None:
    """Folds every LoRA branch into its base layer and puts the plain layer back, in place."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(module.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge()
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, child, m.get_base_layer())


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


# ---------------------------------------------------------------------------------------------
# Frame encoders (what Rater.frame_features runs)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The rater
# ---------------------------------------------------------------------------------------------


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
        # Dimensions whose published score is the learned head's (the bundle measured it ranks better there)
        self.dimension_heads: tuple[str, ...] = ()
        self.precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[model.config.dtype]

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

    def rate(self, features: list[WindowFeatures]) -> list[Rating]:
        if not features:
            return []
        arrays = stack_features(features)
        out = self.predict(arrays)
        return ratings_from_outputs(self, out, arrays["signals"], self.config.rates_dimensions)

    # -- bundle files ---------------------------------------------------------------------------

    def save(self, out_dir: Path) -> list[Path]:
        """Writes rater_config.json, model.safetensors (LoRA merged) and tokenizer.json; returns the paths."""
        from safetensors.torch import save_model

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.merge_lora()
        self.config.lm_config = self.model.hf.config.to_dict()
        paths = [out_dir / "rater_config.json", out_dir / "model.safetensors", out_dir / "tokenizer.json"]
        paths[0].write_text(self.config.model_dump_json(indent=2))
        save_model(self.model, str(paths[1]))
        self.model.tokenizer.save(str(paths[2]))
        if self.prior is not None:
            paths.append(self.prior.forest.save(out_dir / FOREST_FILE))
        return paths

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
            rater.dimension_heads = tuple((manifest.get("dimensions") or {}).get("learned_heads", ()))
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

    from engines.base_model import BaseModelError, weights_family

    with safe_open(str(Path(bundle_dir) / "model.safetensors"), "pt") as f:
        stored = weights_family(f.keys())
    said = {"rater_config.json": config.family, "lm_config.model_type": config.lm_config.get("model_type")}
    if manifest and (manifest.get("model") or {}).get("family"):
        said["manifest.json"] = manifest["model"]["family"]
    wrong = {k: v for k, v in said.items() if v != stored}
    if wrong:
        raise BaseModelError(f"bundle {bundle_dir}: model.safetensors holds the weights of a rater on {stored}, but "
                             + ", ".join(f"{k} says {v}" for k, v in wrong.items())
                             + ": the bundle mixes files trained for different base model families; export or "
                               "copy the whole bundle again")
    try:
        _model_class(config.family)
    except AttributeError as exc:
        raise BaseModelError(f"bundle {bundle_dir} was trained on a {config.family} base model, which this "
                             f"transformers does not have ({exc}): upgrade transformers") from exc


def load_torch_bundle(bundle_dir: Path, manifest: dict, device: str = "cpu", precision: str | None = None) -> FVQRater:
    """An exported `full` bundle (fvq export): the merged weights at the precision its manifest chose (or
    `precision`), engines.quantized applying int8 / int4 / bf16 at load time."""
    from engines.quantized import apply_precision

    chosen = precision or manifest["rater"]["precision"]
    known = manifest.get("precisions", {})
    if chosen not in known:
        raise ValueError(f"bundle {bundle_dir} has no precision {chosen!r}; it has {', '.join(sorted(known))}")
    rater = FVQRater.load(bundle_dir, manifest=manifest, device="cpu")
    notes = (manifest.get("precision_notes") or {}).get(chosen) or {}
    apply_precision(rater.model, chosen, group_size=int(notes.get("group_size", 128)), device=device)
    rater.model.to(device)
    rater.device = device
    rater.precision = chosen
    return rater


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
