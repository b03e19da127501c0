"""Speed of the rater's forward pass on a GPU: fp32 eager against the accelerated path (bf16, static buckets,
optionally CUDA graphs and weight-only int8/4-bit layers), one run, figures printed.

    python -m benchmarks.cuda [--shape 2b|tiny-vl|default] [--device cuda] [--batches 1 8 32]

Shapes:
- `default`: the shipped tiny bundle (engines/bundles/default, MobileNetV2 features precomputed, small Qwen2).
- `tiny-vl`: a tiny-config Qwen2-VL built in code (the `full` architecture at toy width), random weights.
- `2b`: a Qwen2-VL-2B-shaped `full` rater (the published layer sizes: 28 decoder layers of width 1536, a
  32-block vision tower of width 1280) with RANDOM weights: no base model can be downloaded here, so this
  measures the architecture's speed and memory, never its accuracy.

Inputs are random frames/features of the right shapes. Per variant: ms per call and per window at each batch,
windows per second at the largest batch, peak GPU memory, and the largest |score difference| from fp32 eager
on the same inputs (raw 0-100 model scores, before calibration).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def qwen2_vl_config(shape: str, vocab: int):
    from transformers import Qwen2VLConfig

    if shape == "2b":  # Qwen2-VL-2B-Instruct's published sizes
        text = dict(vocab_size=vocab, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                    num_attention_heads=12, num_key_value_heads=2,
                    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=4)
    else:
        text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
        vision = dict(depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=2)
    text.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return Qwen2VLConfig(text_config=text, vision_config=vision)


def build_rater(shape: str, device: str):
    from engines import fvq_rater
    from engines.prompt import build_tokenizer
    from train.model import build_full

    if shape == "default":
        from engines.bundle import read_manifest, shipped_bundle

        return fvq_rater.FVQRater.load(shipped_bundle(), read_manifest(shipped_bundle()), device=device)
    from transformers import Qwen2VLForConditionalGeneration

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device (2B parameters on a CPU take minutes)
        hf = Qwen2VLForConditionalGeneration(qwen2_vl_config(shape, tokenizer.get_vocab_size()))
        size = (224, 392) if shape == "2b" else (28, 56)
        model = build_full(hf, tokenizer, ("frame.noise_sigma", "face.edge_blur_px"), image_size=size)
    return fvq_rater.FVQRater(model.eval(), device=device)


def random_arrays(spec, b: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def inputs(shape):
        if len(shape) == 3:
            return rng.integers(0, 256, (b, spec.frames, *shape), dtype=np.uint8)
        return rng.standard_normal((b, spec.frames, *shape), dtype=np.float32)

    return {
        "spatial": inputs(spec.spatial_shape),
        "portrait": inputs(spec.portrait_shape),
        "face": rng.standard_normal((b, spec.frames, 128), dtype=np.float32),
        "face_mask": np.ones((b, spec.frames), np.float32),
        "thumbs": rng.integers(0, 256, (b, spec.temporal_len, *spec.thumb_size), dtype=np.uint8),
        "intervals": rng.random((b, spec.interval_len, 4), dtype=np.float32),
        "signals": rng.standard_normal((b, spec.signals_dim), dtype=np.float32),
    }


def _time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return 1000 * (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cuda", description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=("default", "tiny-vl", "2b"), default="2b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16", "bf16-graphs", "int8-graphs", "4bit-graphs"])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    from engines.cuda_rater import AcceleratedRater

    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"shape {args.shape} on {name}; torch {torch.__version__}; batches {args.batches}; "
          f"random inputs; {args.repeats} timed calls each")
    data = None
    reference: dict[int, np.ndarray] = {}
    rows = []
    for variant in args.variants:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        base = rater = None
        t0 = time.perf_counter()
        try:
            base = build_rater(args.shape, args.device)
            params = sum(t.numel() for t in base.model.parameters())
            if data is None:
                data = {b: random_arrays(base.spec, b, seed=b) for b in args.batches}
            if variant == "fp32":
                rater = base
            else:
                bits = {"int8-graphs": 8, "4bit-graphs": 4}.get(variant)
                compile = "reduce-overhead" if variant.endswith("graphs") else "none"
                rater = AcceleratedRater(base, device=args.device, compile=compile,
                                         buckets=tuple(sorted(args.batches)), weight_bits=bits, group_size=128)
                if compile != "none":
                    rater.warmup()
            ready_s = time.perf_counter() - t0
            row = {"variant": variant, "params": params, "ready_s": round(ready_s, 1)}
            for b in args.batches:
                batch = data[b]
                ms = _time(lambda r=rater, x=batch: r.predict(x), args.repeats, sync)
                score = rater.predict(batch)["score"]
                if variant == "fp32":
                    reference[b] = score
                diff = float(np.abs(score - reference[b]).max()) if b in reference else float("nan")
                row[f"b{b}"] = {"ms_per_call": round(ms, 3), "ms_per_window": round(ms / b, 4),
                                "max_abs_diff_vs_fp32": round(diff, 4)}
            top = max(args.batches)
            row["windows_per_s"] = round(1000 * top / row[f"b{top}"]["ms_per_call"], 1)
            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
        except Exception as e:  # one variant failing must not hide the others' figures
            row = {"variant": variant, "error": f"{type(e).__name__}: {e}"[:400]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        base = rater = None
    if args.json:
        args.json.write_text(json.dumps({"device": name, "shape": args.shape, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
