"""Loading a base model folder for the `full` rater: one dtype, the real tokenizer and template, processor sizes,
and an error a user can act on for each way a folder or bundle can be wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engines import fvq_rater
from engines.base_model import (
    BaseModelError,
    level_tokens,
    load_base_model,
    smart_resize,
    vision_sizes,
)
from engines.prompt import ANSWER_PREFIX
from tests.engines.test_fvq_rater import random_batch
from tests.export.base_folders import SPECIALS, byte_level_tokenizer, save_base_folder
from train.model import build_from_base, save_rater, stage1_loss, stage2_loss


@pytest.fixture(scope="module")
def qwen_bf16(tmp_path_factory) -> Path:
    return save_base_folder(tmp_path_factory.mktemp("qwen2_vl") / "base", "qwen2_vl", "bfloat16")


def test_a_bf16_folder_gives_a_rater_all_in_bf16_with_fp32_losses(qwen_bf16):
    base = load_base_model(qwen_bf16)
    assert base.dtype == torch.bfloat16 and base.info["weight_files"] > 1  # sharded safetensors
    model = build_from_base(base, ("frame.noise_sigma",), projector_hidden=32)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # adapters, projectors, heads = the base
    assert any("lora_A" in n and ".visual." in n for n, _ in model.named_parameters())  # LoRA on the vision tower
    batch = random_batch(model.config.feature_spec, 3)
    out = model(batch)
    assert all(v.dtype == torch.float32 for v in out.values())
    loss = stage1_loss(out, torch.tensor([0, 2, 4])) + stage2_loss(out, torch.tensor([10., 50., 90.]))
    assert loss.dtype == torch.float32
    loss.backward()
    assert model.spatial_proj.net[1].weight.grad is not None
    assert load_base_model(qwen_bf16, dtype="float32").dtype == torch.float32  # --dtype overrides the stored one


def test_prompt_is_the_chat_template_and_level_words_score_by_their_first_token(qwen_bf16):
    base = load_base_model(qwen_bf16)
    model = build_from_base(base, ())
    tok = base.tokenizer
    first = model.segments[0]
    assert first[0] == tok.token_to_id("<|im_start|>")  # the template's special tokens, as single ids
    assert [s for s in model.segments if isinstance(s, str)] == ["spatial", "portrait", "face", "temporal"]
    last = tok.decode(model.segments[-1], skip_special_tokens=False)
    assert last.endswith("assistant\n" + ANSWER_PREFIX)
    excellent = tok.encode(" excellent", add_special_tokens=False).ids
    assert len(excellent) > 1 and model.level_ids.tolist()[-1] == excellent[0]
    assert model.level_ids.tolist()[0] == tok.encode(" bad", add_special_tokens=False).ids[0]


def test_vision_sizes_follow_the_processor():
    assert smart_resize(360, 640, 28, 3136, 224 * 392) == (196, 392)
    assert smart_resize(10, 10, 28, 3136, 10**6) == (56, 56)  # up to min_pixels, multiples of 28
    from transformers import Qwen2VLConfig

    processor = {"patch_size": 14, "merge_size": 2, "min_pixels": 3136, "max_pixels": 12845056,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    sizes = vision_sizes("qwen2_vl", Qwen2VLConfig(), processor)
    assert sizes.spatial == (196, 392) and sizes.portrait == (224, 224) and sizes.mean == (0.5, 0.5, 0.5)
    assert all(v % 28 == 0 for v in (*sizes.spatial, *sizes.portrait))


def test_a_folder_without_weights(tmp_path, qwen_bf16):
    folder = tmp_path / "noweights"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(qwen_bf16 / name, folder / name)
    with pytest.raises(BaseModelError, match="no weights"):
        load_base_model(folder)
    shutil.copy(qwen_bf16 / "model.safetensors.index.json", folder)  # an index whose shards did not download
    with pytest.raises(BaseModelError, match="weight shards .* are missing"):
        load_base_model(folder)
    with pytest.raises(BaseModelError, match="no config.json"):
        load_base_model(tmp_path)


@pytest.mark.parametrize("model_type,message", [("llava", "not a supported base model family"),
                                                ("internvl_chat", "transformers-native checkpoint")])
def test_an_unsupported_family(tmp_path, model_type, message):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(BaseModelError, match=message):
        load_base_model(tmp_path)


def test_a_tokenizer_without_the_level_words(tmp_path, qwen_bf16):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "the": 1, "video": 2, "quality": 3, "is": 4},
                                       unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(BaseModelError, match="no tokens for the level word 'bad'"):
        level_tokens(words)
    # a byte-level BPE that never learned the words: every one starts with the same byte token
    bare = byte_level_tokenizer(vocab_size=len(SPECIALS) + 256 + 4)
    with pytest.raises(BaseModelError, match="does not tell the level words apart by their first token"):
        level_tokens(bare)
    folder = tmp_path / "base"
    shutil.copytree(qwen_bf16, folder)
    bare.save(str(folder / "tokenizer.json"))
    with pytest.raises(BaseModelError, match="first token"):  # before any weight is read
        load_base_model(folder)


def test_not_enough_memory_is_said_before_loading(tmp_path, qwen_bf16):
    """A Qwen2-VL-72B-shaped config.json (about 73B parameters: 136 GiB in bf16) on this machine."""
    config = json.loads((qwen_bf16 / "config.json").read_text())
    text = config.get("text_config", config)
    text.update(hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=152064)
    text.pop("layer_types", None)
    config.pop("layer_types", None)
    config.update({k: v for k, v in text.items() if k in config and k not in ("model_type", "architectures")})
    (tmp_path / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"):
        shutil.copy(qwen_bf16 / name, tmp_path / name)
    for shard in qwen_bf16.glob("model-*.safetensors"):
        shutil.copy(shard, tmp_path / shard.name)
    with pytest.raises(BaseModelError, match=r"7\d\.\d\dB parameters in bfloat16 need about .* GiB to train"):
        load_base_model(tmp_path)


def test_a_bundle_whose_weights_come_from_another_family(tmp_path, qwen_bf16):
    qwen = fvq_rater.FVQRater(build_from_base(load_base_model(qwen_bf16), ()))
    save_rater(qwen, tmp_path / "qwen")
    internvl_dir = save_base_folder(tmp_path / "internvl_base", "internvl", "float32")
    other = fvq_rater.FVQRater(build_from_base(load_base_model(internvl_dir), ()))
    save_rater(other, tmp_path / "internvl")
    assert fvq_rater.FVQRater.load(tmp_path / "qwen").config.family == "qwen2_vl"  # the bundle as written loads
    shutil.copy(tmp_path / "internvl" / "model.safetensors", tmp_path / "qwen" / "model.safetensors")
    with pytest.raises(BaseModelError, match="holds the weights of a rater on internvl, but rater_config.json says qwen2_vl"):
        fvq_rater.FVQRater.load(tmp_path / "qwen")


def test_train_fit_full_stops_with_the_folder_error_before_any_feature(tmp_path):
    from train.fit import main

    for split in ("train", "val", "test"):
        (tmp_path / "root" / split).mkdir(parents=True)
        (tmp_path / "root" / split / "labels.txt").write_text("a.mp4 50\n")
        (tmp_path / "root" / split / "videos").mkdir()
        (tmp_path / "root" / split / "videos" / "a.mp4").write_bytes(b"never read: the base folder fails first")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(SystemExit, match="train.fit: .* has a config.json but no weights"):
        main(["--root", str(tmp_path / "root"), "--out", str(tmp_path / "out"), "--size", "full",
              "--base-model", str(tmp_path / "base")])
    assert not (tmp_path / "root" / ".cache").exists()  # nothing was extracted
