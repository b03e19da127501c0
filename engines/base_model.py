"""The base vision-language model of the `full` rater, from a local folder: checks, dtype, tokenizer, prompt, sizes.

Everything a real checkpoint folder decides is read from it, once, here: the architecture (config.json), the
weights (safetensors, sharded or not), the dtype they are stored in (the whole rater then runs in it: LoRA
adapters, projectors and heads agree with the base; losses are computed in fp32 on the outputs), the
tokenizer (tokenizer.json), its chat template and special tokens (tokenizer_config.json), and the image sizes
and statistics its processor expects (preprocessor_config.json). Problems a user can fix are raised as
BaseModelError with the reason and what to do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engines.features import LEVELS
from engines.mobilenet import IMAGENET_MEAN, IMAGENET_STD

SUPPORTED = ("qwen2_vl", "qwen2_5_vl", "internvl")
LEVEL_WORDS = LEVELS  # the Stage I answer's words, one token each in the base model's vocabulary
DTYPES = ("float32", "bfloat16", "float16")
# Spatial frames are resized like the processor would resize a 640x360 frame, with at most this many pixels
# (Qwen2-VL: 112 visual tokens before the 2x2 merge); portrait crops like a 224x224 crop.
FRAME_PIXELS = 224 * 392
FRAME_REFERENCE = (360, 640)
PORTRAIT_REFERENCE = (224, 224)
# Memory a step needs besides the weights: activations, LoRA and optimizer state, the allocator's slack.
TRAIN_OVERHEAD, SERVE_OVERHEAD = 1.6, 1.2
GROUP_MARKERS = {"spatial": "\x00FVQ_SPATIAL\x00", "portrait": "\x00FVQ_PORTRAIT\x00",
                 "face": "\x00FVQ_FACE\x00", "temporal": "\x00FVQ_TEMPORAL\x00"}


class BaseModelError(ValueError):
    """A base model folder (or a bundle made from one) that cannot be used; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------


def read_config(model_dir: Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BaseModelError(f"{model_dir} is not a folder: pass the local folder of a downloaded base model")
    path = model_dir / "config.json"
    if not path.is_file():
        raise BaseModelError(f"{model_dir} is not a transformers model folder (no config.json); download the base "
                             "model elsewhere (e.g. `hf download Qwen/Qwen2-VL-2B-Instruct --local-dir DIR`) and pass "
                             "its folder: nothing is fetched from a hub here")
    return json.loads(path.read_text())


def check_family(config: dict[str, Any], model_dir: Path) -> str:
    model_type = config.get("model_type")
    if model_type == "internvl_chat":
        raise BaseModelError(f"{model_dir}: model_type 'internvl_chat' is InternVL's remote-code layout; use the "
                             "transformers-native checkpoint (the '-hf' repositories, e.g. OpenGVLab/InternVL3-1B-hf, "
                             "model_type 'internvl')")
    if model_type not in SUPPORTED:
        raise BaseModelError(f"{model_dir}: model_type {model_type!r} is not a supported base model family; "
                             f"supported: {', '.join(SUPPORTED)} (Qwen2-VL, Qwen2.5-VL, InternVL in the "
                             "transformers-native layout)")
    return model_type


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of the folder (every shard its index names); BaseModelError when there are none."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise BaseModelError(f"{model_dir}: {len(missing)} of {len(shards)} weight shards named by "
                                 f"model.safetensors.index.json are missing ({', '.join(missing[:3])}...): the "
                                 "download is incomplete, resume it")
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    if list(model_dir.glob("pytorch_model*.bin")):
        raise BaseModelError(f"{model_dir} has only pytorch_model*.bin weights; convert them to safetensors "
                             "(transformers: model.save_pretrained(DIR, safe_serialization=True))")
    raise BaseModelError(f"{model_dir} has a config.json but no weights (no model.safetensors or "
                         "model.safetensors.index.json with its shards): download the weight files too")


def resolve_dtype(dtype: str, config: dict[str, Any]) -> torch.dtype:
    """'auto' is the dtype the checkpoint is stored in (config.json's dtype / torch_dtype), else float32."""
    if dtype == "auto":
        dtype = str(config.get("dtype") or config.get("torch_dtype") or
                    (config.get("text_config") or {}).get("dtype") or "float32")
    if dtype not in DTYPES:
        raise BaseModelError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def model_class(family: str):
    import transformers

    return {"qwen2": transformers.Qwen2ForCausalLM,
            "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
            "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
            "internvl": transformers.InternVLForConditionalGeneration}[family]


def parameter_count(model_dir: Path) -> int:
    """Parameters of the architecture config.json describes (built on the meta device: no memory, no weights)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except (ValueError, TypeError) as exc:  # transformers' own config validation
        raise BaseModelError(f"{model_dir}/config.json is not a valid transformers config: {exc}") from exc
    with torch.device("meta"):
        model = model_class(config.model_type)(config)
    return sum(p.numel() for p in model.parameters())


def available_memory(device: str = "cpu") -> int:
    """Bytes free for the model: MemAvailable on the CPU, free GPU memory on CUDA."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(parameters: int, dtype: torch.dtype, training: bool, device: str = "cpu",
                 available: int | None = None, where: str = "") -> int:
    """Estimated bytes (weights x overhead) against what the device has free; BaseModelError when short."""
    bytes_per = torch.tensor([], dtype=dtype).element_size()
    need = int(parameters * bytes_per * (TRAIN_OVERHEAD if training else SERVE_OVERHEAD))
    have = available_memory(device) if available is None else available
    if need > have:
        gib = 1024 ** 3
        hint = " in bfloat16 (--dtype bfloat16)" if bytes_per == 4 else ""
        raise BaseModelError(
            f"{where}{parameters / 1e9:.2f}B parameters in {str(dtype).removeprefix('torch.')} need about "
            f"{need / gib:.1f} GiB to {'train' if training else 'serve'}, and {device} has {have / gib:.1f} GiB "
            f"free: use a machine with more memory, a GPU (--device cuda), a smaller base model{hint}")
    return need


# ---------------------------------------------------------------------------------------------
# Tokenizer, prompt and level words
# ---------------------------------------------------------------------------------------------


def tokenizer_settings(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "tokenizer_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def render_prompt(chat_template: str | None, prompt: str, answer_prefix: str, bos: str | None,
                  specials: set[str]) -> str:
    """The prompt text with GROUP_MARKERS where the token groups go: the tokenizer's chat template (one user
    turn, the generation prompt) when it has one, a plain USER/ASSISTANT text otherwise; the answer prefix last."""
    wrap = ("<|vision_start|>", "<|vision_end|>") if {"<|vision_start|>", "<|vision_end|>"} <= specials else ("", "")
    m = GROUP_MARKERS
    content = (f"{wrap[0]}{m['spatial']}{wrap[1]}\n{wrap[0]}{m['portrait']}{wrap[1]}\nFace: {m['face']}\n"
               f"Motion: {m['temporal']}\n{prompt}")
    if chat_template:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        text = env.from_string(chat_template).render(
            messages=[{"role": "user", "content": content}], add_generation_prompt=True,
            bos_token=bos or "", eos_token="")
        return text + answer_prefix
    return (bos or "") + "USER: " + content + " ASSISTANT: " + answer_prefix


def prompt_segments(tokenizer, text: str) -> list[list[int] | str]:
    """Token id lists and group names, in order, from a prompt text with GROUP_MARKERS."""
    segments: list[list[int] | str] = []
    rest = text
    names = {v: k for k, v in GROUP_MARKERS.items()}
    while rest:
        hits = [(rest.find(mk), mk) for mk in names if mk in rest]
        if not hits:
            segments.append(tokenizer.encode(rest, add_special_tokens=False).ids)
            break
        pos, mk = min(hits)
        if pos:
            segments.append(tokenizer.encode(rest[:pos], add_special_tokens=False).ids)
        segments.append(names[mk])
        rest = rest[pos + len(mk):]
    missing = set(GROUP_MARKERS) - {s for s in segments if isinstance(s, str)}
    if missing:
        raise BaseModelError(f"the chat template dropped the prompt's {', '.join(sorted(missing))} tokens")
    return [s for s in segments if s != []]


def level_tokens(tokenizer, words: tuple[str, ...] = LEVEL_WORDS, where: str = "") -> tuple[list[int], dict]:
    """The id each level word scores by: the first token of " word" as the tokenizer splits it after the answer
    prefix (Q-Align's rule for words of several tokens). BaseModelError when a word is unknown to the
    tokenizer or two words share their first token."""
    unk = tokenizer.token_to_id("<unk>")
    model = json.loads(tokenizer.to_str()).get("model", {})
    unk_token = model.get("unk_token")
    if unk_token is not None:
        unk = tokenizer.token_to_id(unk_token)
    splits = {}
    for w in words:
        enc = tokenizer.encode(" " + w, add_special_tokens=False)
        if not enc.ids or (unk is not None and unk in enc.ids):
            raise BaseModelError(f"{where}the tokenizer has no tokens for the level word {w!r} (it encodes to "
                                 f"{enc.tokens}): the rater needs a tokenizer that spells {', '.join(words)}")
        splits[w] = {"ids": enc.ids, "tokens": enc.tokens}
    firsts = [splits[w]["ids"][0] for w in words]
    if len(set(firsts)) != len(words):
        raise BaseModelError(f"{where}the tokenizer does not tell the level words apart by their first token "
                             f"({ {w: splits[w]['tokens'] for w in words} }): the rater scores a word by its first "
                             "token, as Q-Align does")
    return firsts, splits


# ---------------------------------------------------------------------------------------------
# Vision sizes
# ---------------------------------------------------------------------------------------------


def smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's processor rule: both sides multiples of `factor`, the area within [min_pixels, max_pixels],
    the aspect ratio kept."""
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


@dataclass
class VisionSizes:
    spatial: tuple[int, int]
    portrait: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rule: str


def vision_sizes(family: str, hf_config, processor: dict[str, Any], frame_pixels: int = FRAME_PIXELS) -> VisionSizes:
    """The sizes frames and portrait crops are fed to the vision tower at, as the base model's processor sizes
    images (preprocessor_config.json), and its normalisation statistics."""
    from engines.rater_config import CLIP_MEAN, CLIP_STD

    clip = (CLIP_MEAN, CLIP_STD)
    imagenet = (IMAGENET_MEAN, IMAGENET_STD)
    default = imagenet if family == "internvl" else clip
    mean = tuple(processor.get("image_mean") or default[0])
    std = tuple(processor.get("image_std") or default[1])
    if family == "internvl":
        size = processor.get("size") or {}
        s = hf_config.vision_config.image_size
        tile = (int(size["height"]), int(size["width"])) if "height" in size else \
            ((s[0], s[1]) if isinstance(s, (list, tuple)) else (s, s))
        return VisionSizes(tile, tile, mean, std, f"InternVL tiles: {tile[0]}x{tile[1]} (the processor's size; "
                                                  "one tile per frame and per crop, no dynamic tiling)")
    vcfg = hf_config.vision_config
    factor = int(processor.get("patch_size", vcfg.patch_size)) * int(processor.get("merge_size", vcfg.spatial_merge_size))
    size = processor.get("size") or {}
    lo = int(processor.get("min_pixels") or size.get("shortest_edge") or 56 * 56)
    hi = int(processor.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280)
    cap = max(lo, min(hi, frame_pixels))
    spatial = smart_resize(*FRAME_REFERENCE, factor, lo, cap)
    portrait = smart_resize(*PORTRAIT_REFERENCE, factor, lo, cap)
    return VisionSizes(spatial, portrait, mean, std,
                       f"Qwen2-VL processor rule (smart_resize, factor {factor}, pixels {lo}..{hi}, capped at "
                       f"{cap}): a {FRAME_REFERENCE[1]}x{FRAME_REFERENCE[0]} frame -> {spatial[1]}x{spatial[0]}, "
                       f"a {PORTRAIT_REFERENCE[0]}px crop -> {portrait[1]}x{portrait[0]}")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass
class BaseModel:
    """A loaded base model and what its folder says about using it."""

    hf: Any
    tokenizer: Any  # tokenizers.Tokenizer
    family: str
    dtype: torch.dtype
    folder: str
    chat_template: str | None
    bos_token: str | None
    specials: set[str]
    sizes: VisionSizes
    parameters: int
    memory_estimate: int
    info: dict[str, Any] = field(default_factory=dict)


def load_base_model(model_dir: Path, dtype: str = "auto", device: str = "cpu", training: bool = True,
                    available: int | None = None, frame_pixels: int = FRAME_PIXELS) -> BaseModel:
    """Checks and loads a Qwen2-VL / Qwen2.5-VL / InternVL (transformers-native) folder in one dtype."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    raw = read_config(model_dir)
    family = check_family(raw, model_dir)
    files = weight_files(model_dir)
    torch_dtype = resolve_dtype(dtype, raw)
    if not (model_dir / "tokenizer.json").is_file():
        raise BaseModelError(f"{model_dir} has no tokenizer.json (the fast tokenizer file): download it with the weights")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    level_tokens(tokenizer, where=f"{model_dir}: ")  # before the weights: a wrong tokenizer fails fast
    n = parameter_count(model_dir)
    need = check_memory(n, torch_dtype, training, device, available, where=f"{model_dir}: ")
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    hf = model_class(family).from_pretrained(model_dir, local_files_only=True, dtype=torch_dtype)
    hf.config._attn_implementation = "sdpa"
    settings = tokenizer_settings(model_dir)
    specials = {t["content"] if isinstance(t, dict) else t
                for t in (settings.get("added_tokens_decoder") or {}).values()}
    specials |= {t.content for t in tokenizer.get_added_tokens_decoder().values()} \
        if hasattr(tokenizer, "get_added_tokens_decoder") else set()
    pre = model_dir / "preprocessor_config.json"
    processor = json.loads(pre.read_text()) if pre.is_file() else {}
    sizes = vision_sizes(family, config, processor, frame_pixels)
    info = {"folder": str(model_dir), "family": family, "dtype": str(torch_dtype).removeprefix("torch."),
            "parameters": n, "weight_files": len(files), "memory_estimate_bytes": need,
            "preprocessor_config": pre.is_file(), "chat_template": bool(settings.get("chat_template"))}
    return BaseModel(hf, tokenizer, family, torch_dtype, str(model_dir), settings.get("chat_template"),
                     _token_text(settings.get("bos_token")), specials, sizes, n, need, info)


def weights_family(names) -> str:
    """The family a rater's state dict was saved from, by its module names."""
    names = list(names)
    if any(".vision_tower." in k for k in names):
        return "internvl"
    if any(".visual.blocks." in k for k in names):
        return "qwen2_5_vl" if any(".visual.blocks.0.mlp.gate_proj" in k for k in names) else "qwen2_vl"
    return "qwen2"


__all__ = ["LEVEL_WORDS", "SUPPORTED", "BaseModel", "BaseModelError", "VisionSizes", "check_memory", "level_tokens",
           "load_base_model", "parameter_count", "prompt_segments", "render_prompt", "resolve_dtype", "vision_sizes",
           "weight_files", "weights_family"]
