"""Tiny vision-language base models saved to folders the way a hub download looks (no download involved).

Per family: `save_pretrained` with sharded safetensors, config.json, a byte-level BPE tokenizer.json trained
here with the `tokenizers` library (so the level words split as a real BPE splits them), tokenizer_config.json
with a chat template and special tokens, and preprocessor_config.json with the processor's sizes and stats.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
# Training text for the BPE merges: generic sentences, few level words, so several of them split into pieces.
TEXT = [
    "Please evaluate the quality of this video.", "The video quality is", "The quality of the image is",
    "a person talks to the camera in a room", "user assistant system", "frames portrait face motion",
    "the weather is fine today and the light is soft", "good morning", "this is a test of the tokenizer",
    "a bad day, a poor fair, excel sheets",  # " excellent" stays two pieces: " excel" + "lent"
] * 20


def byte_level_tokenizer(vocab_size: int = 420):
    """A byte-level BPE like Qwen's (ByteLevel pre-tokenizer and decoder), trained on TEXT."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    return tok


def tiny_config(family: str, vocab: int):
    """A one-layer text model with a one- or two-block vision tower, of the family's architecture."""
    import transformers

    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, bos_token_id=None, eos_token_id=SPECIALS.index("<|im_end|>"),
                pad_token_id=SPECIALS.index("<|endoftext|>"))
    if family == "internvl":
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      image_size=[28, 28], patch_size=[14, 14])
        return transformers.InternVLConfig(text_config={**text, "model_type": "qwen2"}, vision_config=vision,
                                           image_token_id=SPECIALS.index("<|image_pad|>"))
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
    ids = dict(image_token_id=SPECIALS.index("<|image_pad|>"), vision_start_token_id=SPECIALS.index("<|vision_start|>"),
               vision_end_token_id=SPECIALS.index("<|vision_end|>"), video_token_id=SPECIALS.index("<|image_pad|>"))
    if family == "qwen2_vl":
        vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=2)
        return transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    vision = dict(depth=2, hidden_size=16, intermediate_size=32, out_hidden_size=32, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)


def preprocessor_config(family: str) -> dict:
    if family == "internvl":  # GotOcr2-style processor: fixed square tiles, ImageNet statistics
        return {"image_processor_type": "GotOcr2ImageProcessorFast", "size": {"height": 28, "width": 28},
                "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "do_normalize": True}
    # Qwen2-VL processor: any size in multiples of patch x merge within min/max pixels, CLIP statistics
    return {"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14, "merge_size": 2,
            "temporal_patch_size": 2, "min_pixels": 28 * 28, "max_pixels": 56 * 84,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}


def save_base_folder(out: Path, family: str, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """Writes a tiny `family` model folder (weights in `dtype`, sharded) and returns it."""
    import transformers

    out = Path(out)
    tok = byte_level_tokenizer()
    config = tiny_config(family, tok.get_vocab_size())
    torch.manual_seed(seed)
    cls = {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
           "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
           "internvl": transformers.InternVLForConditionalGeneration}[family]
    model = cls(config).to(getattr(torch, dtype))
    model.save_pretrained(out, max_shard_size="40KB", safe_serialization=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "chat_template": CHATML, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "bos_token": None, "model_max_length": 32768,
        "added_tokens_decoder": {str(i): {"content": s, "special": True} for i, s in enumerate(SPECIALS)},
    }, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(family), indent=2))
    return out


__all__ = ["CHATML", "SPECIALS", "byte_level_tokenizer", "save_base_folder", "tiny_config"]
