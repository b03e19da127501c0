"""RaterConfig: everything needed to rebuild an FVQ-Rater model from a bundle (its rater_config.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from engines.rater import FeatureSpec

FAMILIES = ("qwen2", "qwen2_vl", "qwen2_5_vl", "internvl")
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


__all__ = ["CLIP_MEAN", "CLIP_STD", "FAMILIES", "IMAGENET_MEAN", "IMAGENET_STD", "RaterConfig"]
