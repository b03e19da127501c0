"""`fvq export` of a `full` checkpoint: LoRA merged, the torch precisions checked on real frames and measured on the
eval split, the bundle (format 2, runtime torch) with its manifest.

The vision tower runs inside the model, so there is no separate encoder graph: the bundle holds the merged
weights once (model.safetensors, in the base checkpoint's dtype) and each precision is applied when the bundle
is loaded (engines/quantized.py): fp32, bf16, int8 (torch's dynamic int8 linear layers: fbgemm kernels on the
CPU) and int4 (4-bit weight-only, grouped). TensorRT stays the GPU engine of the tiny bundle's ONNX graphs;
the full size's GPU path is engines/cuda_rater.py (bf16, CUDA graphs, the same weight-only layers).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from engines.quantized import PRECISIONS

SRCC_MARGIN = 0.02  # a cheaper precision is the default only this close to the stored one's SRCC
# |raw score - the stored precision's| on real frames, 0..100 scale: the stored precision reloaded must match it
# exactly; another float precision, int8 and int4 change the rounding of every layer.
STORED_TOLERANCE = 1e-3
SCORE_TOLERANCE = {"fp32": 2.0, "bf16": 2.0, "int8": 2.0, "int4": 5.0}
VARIANTS = ("fp32", "bf16", "int8", "int4")


def pixel_arrays(spec, spatial_size, portrait_size, n_windows: int = 2) -> dict[str, np.ndarray]:
    """Rater inputs whose frames and crops are real face frames (astronaut, carphone), resized as the live path
    resizes them; no faces, neutral intervals, thumbs from the frames."""
    import cv2

    from engines.rater import resize_frame
    from export.parity import real_face_frames

    k = spec.frames
    frames = real_face_frames(n_windows * k)
    spatial = np.stack([resize_frame(f, tuple(spatial_size)) for f in frames]).reshape(n_windows, k, *spatial_size, 3)
    crops = [f[:, (f.shape[1] - f.shape[0]) // 2:][:, : f.shape[0]] for f in frames]
    portrait = np.stack([resize_frame(c, tuple(portrait_size)) for c in crops]).reshape(n_windows, k, *portrait_size, 3)
    th, tw = spec.thumb_size
    luma = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (tw, th), interpolation=cv2.INTER_AREA) for f in frames]
    thumbs = np.stack([np.stack([luma[(i * k + t) % len(luma)] for t in range(spec.temporal_len)])
                       for i in range(n_windows)])
    intervals = np.zeros((n_windows, spec.interval_len, 4), np.float32)
    intervals[..., 0] = 1.0
    return {"spatial": spatial, "portrait": portrait, "face": np.zeros((n_windows, k, 128), np.float32),
            "face_mask": np.zeros((n_windows, k), np.float32), "thumbs": thumbs.astype(np.uint8),
            "intervals": intervals,
            "signals": np.linspace(0, 1, spec.signals_dim, dtype=np.float32)[None].repeat(n_windows, 0)}


def variant_rater(bundle: Path, manifest: dict[str, Any], precision: str):
    from engines.fvq_rater import load_torch_bundle

    return load_torch_bundle(bundle, manifest, precision=precision)


def run_full_export(checkpoint: Path, out: Path, eval_root: Path | None = None, eval_split: str = "test",
                    eval_clips: int = 0, precision: str = "auto", log=print) -> dict[str, Any]:
    import torch

    from engines import bundle as bundle_mod
    from engines.forest import FOREST_FILE
    from engines.quantized import model_bytes as module_bytes
    from export.merge import checkpoint_manifest, load_checkpoint
    from train.model import save_rater

    checkpoint, out = Path(checkpoint), Path(out)
    t0 = time.time()
    source = checkpoint_manifest(checkpoint)
    rater = load_checkpoint(checkpoint)  # LoRA merged (train.fit bundles are saved merged already)
    cfg = rater.config
    staging = out.parent / (out.name + ".export-tmp") if out.resolve() == checkpoint.resolve() else out
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_rater(rater, staging)
    stored = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[cfg.dtype]
    variants = [stored] + [v for v in VARIANTS if v != stored]
    group = 128 if cfg.lm_config.get("text_config", cfg.lm_config).get("hidden_size", 128) % 128 == 0 else 32
    manifest: dict[str, Any] = {
        "format_version": bundle_mod.FORMAT_VERSION,
        "model": {**source.get("model", {}), "size": cfg.size, "family": cfg.family, "lora_merged": True,
                  "dtype": cfg.dtype, "rates_dimensions": cfg.rates_dimensions},
        "inputs": rater.spec.to_dict(),
        "calibration": {**source.get("calibration", {"kind": "linear_clip"}), **cfg.calibration},
        "graphs": None,
        "precisions": {v: {"model": "model.safetensors"} for v in variants if v in PRECISIONS},
        "precision_notes": {v: {"group_size": group,
                           "how": {"fp32": "weights cast to fp32", "bf16": "weights cast to bf16",
                                   "int8": "LLM linear layers as torch dynamic int8 (per-channel weights, fbgemm)",
                                   "int4": f"LLM linear layers 4-bit weight-only, groups of {group} columns"}[v]}
                       for v in variants if v in PRECISIONS},
        "runtimes": {"torch": [v for v in variants if v in PRECISIONS],
                     "tensorrt": [], "note": "TensorRT runs the tiny size's ONNX graphs; the full size's GPU path is "
                                             "torch (engines/cuda_rater.py: bf16, CUDA graphs, weight-only int8/4-bit)"},
        "source": {"checkpoint": str(checkpoint),
                   "manifest_sha256": bundle_mod.file_sha256(checkpoint / bundle_mod.MANIFEST)
                   if bundle_mod.has_manifest(checkpoint) else None},
        "training": source.get("training"), "metrics": source.get("metrics"),
        "dimensions": source.get("dimensions"), "prior": source.get("prior"),
        "extractors": source.get("extractors"),
    }
    names = ["rater_config.json", "model.safetensors", "tokenizer.json"] + \
        ([FOREST_FILE] if rater.prior is not None else [])
    bundle_mod.write_manifest(staging, {**manifest, "rater": {"runtime": "torch", "precision": stored}}, names)

    # parity of every precision against the stored one, on real face frames
    arrays = pixel_arrays(rater.spec, cfg.spatial_size, cfg.portrait_size)
    current = bundle_mod.read_manifest(staging)
    reference = rater.predict(arrays)
    parity, table, sizes = {}, {}, {}
    for v in manifest["precisions"]:
        r = variant_rater(staging, current, v)
        got = r.predict(arrays)
        parity[v] = {k: float(np.abs(got[k] - reference[k]).max()) for k in ("score", "level_logits")}
        sizes[v] = module_bytes(r.model)
        tolerance = STORED_TOLERANCE if v == stored else SCORE_TOLERANCE[v]
        if parity[v]["score"] > tolerance:
            raise SystemExit(f"fvq export: precision {v} moves the raw score by {parity[v]['score']:.3f} on real "
                             f"frames (tolerance {tolerance}): refusing the export")
    manifest["parity"] = {"frames": "real face frames (astronaut, carphone)", "against": stored, "max_abs": parity,
                          "tolerances": {v: STORED_TOLERANCE if v == stored else SCORE_TOLERANCE[v] for v in parity}}
    if eval_root:
        from export.evaluate import analyse_split, evaluate_variant

        clips = analyse_split(eval_root, eval_split, max_clips=eval_clips or None)
        preds = {}
        for v in manifest["precisions"]:
            r = variant_rater(staging, current, v)
            with torch.inference_mode():
                row = evaluate_variant(r, clips, v, keep_predictions=True)
            preds[v] = np.asarray(row.pop("predictions"))
            table[v] = {**row, "model_bytes": sizes[v]}
        from train.evaluate import srcc

        for v, p in preds.items():  # the accuracy change itself: each clip's published score against the stored one's
            table[v]["clip_score_max_abs_vs_" + stored] = float(np.abs(p - preds[stored]).max()) if len(p) else 0.0
            table[v]["clip_score_srcc_vs_" + stored] = float(srcc(p, preds[stored])) if len(p) >= 3 else None
    if precision == "auto":
        chosen, reason = choose_precision(table, stored)
    else:
        if precision not in manifest["precisions"]:
            raise SystemExit(f"fvq export: --precision {precision} is not one of {', '.join(manifest['precisions'])}")
        chosen, reason = precision, "chosen with --precision"
    manifest["rater"] = {"runtime": "torch", "precision": chosen, "reason": reason}
    manifest["eval"] = {"split": eval_split, "root": str(eval_root), "table": table,
                        "note": "clip SRCC/PLCC of the published score; ms per window at one clip's windows a batch, "
                                "on this CPU (one thread)"} if table else None
    manifest["model_bytes"] = sizes
    manifest["export_seconds"] = round(time.time() - t0, 1)
    bundle_mod.publish_staged(staging, out, manifest, names)
    log(json.dumps({"out": str(out), "rater": manifest["rater"], "parity": parity, "eval": table or None,
                    "model_bytes": sizes}, indent=2))
    return manifest


def choose_precision(table: dict[str, dict[str, Any]], stored: str) -> tuple[str, str]:
    """The fastest precision whose eval SRCC is within SRCC_MARGIN of the stored one's; the stored one without an
    eval split."""
    if stored not in table:
        return stored, f"no eval split given: {stored}, the checkpoint's own precision"
    base = table[stored]
    ok = [(row["rater_ms_per_window"], name) for name, row in table.items()
          if row["srcc"] >= base["srcc"] - SRCC_MARGIN and row["rater_ms_per_window"] <= base["rater_ms_per_window"]]
    ms, name = min(ok)
    return name, (f"fastest precision within {SRCC_MARGIN} eval SRCC of {stored} ({base['srcc']:.4f}): "
                  f"{ms:.1f} vs {base['rater_ms_per_window']:.1f} ms per window")


__all__ = ["choose_precision", "pixel_arrays", "run_full_export"]
